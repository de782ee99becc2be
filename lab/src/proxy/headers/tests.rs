use hyper::header::HeaderValue;

use super::*;

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = header::HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("close, x-private"),
    );
    h.insert("x-private", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key(header::CONTENT_TYPE));
}

#[test]
fn host_survives_connection_naming_it() {
    let mut h = header::HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("host"));
    h.insert(header::HOST, HeaderValue::from_static("lab"));
    strip_request_headers(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h[header::HOST], "lab");
}

#[test]
fn absolute_targets_become_origin_form() {
    let u = |s: &str| s.parse::<Uri>().unwrap();
    assert_eq!(origin_form(u("http://lab:80/a?b=1")), u("/a?b=1"));
    assert_eq!(origin_form(u("http://lab")), u("/"));
    assert_eq!(origin_form(u("/x")), u("/x"));
}

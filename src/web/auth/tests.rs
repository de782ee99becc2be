use super::*;

fn headers(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, value.parse().unwrap());
    h
}

#[test]
fn credentials_of_a_basic_header() {
    // "prometheus:s3cr:et" (a colon in the password is the password's).
    let h = headers("Basic cHJvbWV0aGV1czpzM2NyOmV0");
    assert_eq!(
        credentials(&h),
        Some(("prometheus".into(), "s3cr:et".into()))
    );
    assert_eq!(credentials(&headers("Bearer abc")), None);
    assert_eq!(credentials(&headers("Basic !!!")), None);
    assert_eq!(credentials(&HeaderMap::new()), None);
}

#[tokio::test]
async fn right_wrong_and_unknown() {
    let hash = bcrypt::hash("right", 4).unwrap();
    let stats = Arc::new(WebStats::default());
    let auth = BasicAuth::new(BTreeMap::from([("u".to_owned(), hash)]), stats);
    assert!(auth.check("u", "right").await);
    assert!(auth.check("u", "right").await, "from the cache");
    assert!(!auth.check("u", "wrong").await);
    assert!(!auth.check("nobody", "right").await);
    let r = unauthorized();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
}

use super::*;

#[test]
fn parses_addresses() {
    assert_eq!(
        "127.0.0.1:80".parse::<Addr>().unwrap(),
        Addr::Tcp("127.0.0.1:80".parse().unwrap())
    );
    assert_eq!(
        "http://[::1]:80/".parse::<Addr>().unwrap(),
        Addr::Tcp("[::1]:80".parse().unwrap())
    );
    assert_eq!(
        "unix:/run/a b.sock".parse::<Addr>().unwrap(),
        Addr::Unix("/run/a b.sock".into())
    );
    assert!("localhost:80".parse::<Addr>().is_err());
    assert!("unix:".parse::<Addr>().is_err());
}

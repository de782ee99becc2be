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

/// The (password, hash) of every verification.
type Calls = Arc<Mutex<Vec<(String, String)>>>;

/// A verifier that records its calls and answers `answer`.
fn recording(answer: bool) -> (Verifier, Calls) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&calls);
    let verify: Verifier = Arc::new(move |pw: &str, hash: &str| {
        c.lock().unwrap().push((pw.to_owned(), hash.to_owned()));
        answer
    });
    (verify, calls)
}

#[tokio::test]
async fn an_unknown_user_costs_one_verification_against_the_dummy_hash() {
    let hash = bcrypt::hash("right", 5).unwrap();
    let users = BTreeMap::from([("u".to_owned(), hash.clone())]);
    let stats = Arc::new(WebStats::default());
    let (verify, calls) = recording(false);
    let auth = BasicAuth::with_verifier(users.clone(), Arc::clone(&stats), verify);

    assert!(!auth.check("u", "wrong").await);
    assert!(!auth.check("nobody", "guess").await);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one verification each: {calls:?}");
    assert_eq!(calls[0], ("wrong".to_owned(), hash));
    let (pw, dummy) = &calls[1];
    assert_eq!(pw, "guess");
    let parts: bcrypt::HashParts = dummy.parse().expect("the dummy is a bcrypt hash");
    assert_eq!(parts.get_cost(), 5, "the users' cost");
    assert!(!users.values().any(|h| h == dummy));

    // Even a verifier that says yes does not let an unknown user in.
    let (yes, calls) = recording(true);
    let auth = BasicAuth::with_verifier(users, stats, yes);
    assert!(!auth.check("nobody", "anything").await);
    assert!(!auth.check("nobody", "anything").await, "not cached either");
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[test]
fn the_dummy_hash_costs_a_real_verification() {
    // A malformed dummy would fail fast (an error, not a computed
    // mismatch) and the timing would tell unknown users apart.
    for cost in [4, 10, 31] {
        let parts: bcrypt::HashParts = dummy_hash(cost).parse().unwrap();
        assert_eq!(parts.get_cost(), cost);
    }
    assert_eq!(bcrypt::verify("", &dummy_hash(4)).ok(), Some(false));
    assert_eq!(bcrypt::verify("right", &dummy_hash(4)).ok(), Some(false));
}

use super::*;

#[test]
fn behavior_names_round_trip() {
    for (b, name) in Behavior::ALL.into_iter().zip(Behavior::NAMES) {
        assert_eq!(b.name(), name);
        assert_eq!(b.to_string(), name);
        assert_eq!(name.parse::<Behavior>().unwrap(), b);
    }
    assert!("NoAccept".parse::<Behavior>().is_err());
    assert!("".parse::<Behavior>().is_err());
}

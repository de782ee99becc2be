use super::*;

fn stats(accepts: u64, requests: u64, active: u64, writing: u64) -> Stats {
    let s = Stats::default();
    s.accepts.store(accepts, Relaxed);
    s.handled.store(accepts, Relaxed);
    s.requests.store(requests, Relaxed);
    s.active.store(active, Relaxed);
    s.writing.store(writing, Relaxed);
    s
}

/// The byte-exact page (`ngx_http_stub_status_handler()`); the agent's
/// parser reads it back in the root crate's `collector::nginx` tests.
#[test]
fn stub_status_page_is_nginx_format() {
    assert_eq!(
        stats(7, 9, 3, 1).page(),
        "Active connections: 3 \nserver accepts handled requests\n 7 7 9 \nReading: 0 Writing: 1 Waiting: 2 \n"
    );
}

#[test]
fn writing_is_capped_by_active() {
    // The gauges are read one after the other: Waiting never underflows.
    assert!(
        stats(1, 1, 1, 2)
            .page()
            .ends_with("Writing: 1 Waiting: 0 \n")
    );
}

#[test]
fn workers_add_up() {
    let total = Stats::default();
    total.add(&stats(1, 2, 1, 0));
    total.add(&stats(3, 4, 2, 1));
    assert!(total.page().contains(" 4 4 6 \n"), "{}", total.page());
    assert!(total.page().starts_with("Active connections: 3 \n"));
}

#[test]
fn held_gauge_goes_back_down() {
    let g = AtomicU64::new(0);
    {
        let _a = Held::new(&g);
        let _b = Held::new(&g);
        assert_eq!(g.load(Relaxed), 2);
    }
    assert_eq!(g.load(Relaxed), 0);
}

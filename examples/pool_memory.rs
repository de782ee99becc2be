//! Heap bytes the ephemeral-port analysis holds per census, by pools and by
//! sockets: the forecast keeps per-pool TIME_WAIT timers (60 one-second
//! buckets) and per-pool entry counters, so its memory grows with the
//! pools, not the sockets. BENCHMARKS.md ("Forecast memory") quotes it.
//!
//!     cargo run --release --example pool_memory
//!
//! A counting global allocator measures the bytes live after building the
//! census's pool table ([`EphemeralPorts`]), its report (capped at 20
//! pools) and the state carried to the next census ([`PoolEntries`]), for
//! 1k and 10k pools with 1 and 3 TIME_WAIT sockets each (plus one
//! ESTABLISHED).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};

use sockscope::collector::ephemeral_ports::{self, EphemeralPorts, PoolEntries, PortModel};
use sockscope::collector::listen_queue::PortSet;
use sockscope::model::{Family, PortRange, TcpQueues, TcpSocket, TcpState};
use sockscope::source::sysctl::Sysctls;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is a
// side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let model = PortModel::new(&Sysctls {
        somaxconn: 4096,
        port_range: PortRange::new(32768, 60999).unwrap(),
        reserved_ports: vec![],
        tcp_tw_reuse: 0,
        tcp_tw_reuse_delay_ms: Some(1000),
        tcp_timestamps: 1,
        tcp_max_tw_buckets: 262_144,
    });
    let listening = PortSet::default();
    println!(
        "| pools | TIME_WAIT per pool | sockets | census pool table, bytes | report + carried state, bytes | per pool, bytes |"
    );
    println!("|---|---|---|---|---|---|");
    for pools in [1_000u32, 10_000] {
        for tw in [1u16, 3] {
            let base = live();
            let mut e = EphemeralPorts::new(2_000);
            let mut sockets = 0u64;
            for i in 0..pools {
                let remote = SocketAddr::new(Ipv4Addr::from(0x0a00_0000 | i).into(), 80);
                let est = TcpSocket {
                    family: Family::Ipv4,
                    state: TcpState::Established,
                    local: SocketAddr::new(Ipv4Addr::new(10, 255, 0, 1).into(), 40000),
                    remote,
                    queues: TcpQueues::Bytes { recv: 0, send: 0 },
                    expires_ms: None,
                };
                e.observe(&model, &listening, &est);
                sockets += 1;
                for j in 0..tw {
                    let s = TcpSocket {
                        state: TcpState::TimeWait,
                        local: SocketAddr::new(Ipv4Addr::new(10, 255, 0, 1).into(), 40001 + j),
                        expires_ms: Some(1_000 + (i % 59_000)),
                        ..est
                    };
                    e.observe(&model, &listening, &s);
                    sockets += 1;
                }
            }
            let table = live() - base;
            let mut entries = PoolEntries::default();
            let report = ephemeral_ports::report(&model, &listening, &e, 20, &mut entries);
            let with_state = live() - base - table;
            drop(e);
            // What lives on between censuses: the report and the state.
            let carried = live() - base;
            println!(
                "| {pools} | {tw} | {sockets} | {table} | {carried} (report {} rows) | {:.0} |",
                report.pools.len(),
                (table + with_state) as f64 / f64::from(pools)
            );
            drop((report, entries));
        }
    }
}

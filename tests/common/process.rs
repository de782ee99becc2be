//! Child processes: commands run to completion, children whose output
//! goes to a log file ([`LoggedChild`], [`LabProcess`]), signals, and
//! readers of a process's /proc entries and limits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::prereq;
use super::truth::{tcp_listening, unix_listening};
use super::wait::wait_for;

/// Runs a command, asserts success, returns stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `cmd` with `input` on stdin; returns its output (stdout and
/// stderr captured). `what` names it in the spawn error.
pub fn pipe_through(cmd: &mut Command, what: &str, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the tool `cmd` ([`prereq::command`]) with `args` and `input` on
/// stdin; returns (success, stdout+stderr).
pub fn run_with_stdin(cmd: &str, args: &[&str], input: &str) -> (bool, String) {
    let out = pipe_through(prereq::command(cmd).args(args), cmd, input);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Spawns `cmd` with stdin from /dev/null and stdout and stderr into
/// `log` (created); the child gets `death_signal` when the spawning thread
/// dies (`PR_SET_PDEATHSIG`).
pub fn spawn_logged(cmd: &mut Command, log: &Path, death_signal: Signal) -> std::io::Result<Child> {
    let file = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(death_signal))
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// A child whose stdout and stderr go to a log file in a temporary
/// directory of its own ([`spawn_logged`]).
pub struct LoggedChild {
    pub child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedChild {
    pub fn spawn(cmd: &mut Command, death_signal: Signal) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("output.log");
        let child = spawn_logged(cmd, &log, death_signal)?;
        Ok(LoggedChild {
            child,
            log,
            _dir: dir,
        })
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the child has exited; `what` names it.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{what} exited: {status}\n----- its log -----\n{}",
                self.log()
            );
        }
    }
}

/// Sends `signal` to `child` (kill(2)); panics when the kernel refuses.
pub fn signal_child(child: &Child, signal: Signal) {
    rustix::process::kill_process(Pid::from_child(child), signal)
        .unwrap_or_else(|e| panic!("kill({}, {signal:?}): {e}", child.id()));
}

/// Sends `signal` to `child` ([`signal_child`]), waits (bounded: 5 s) for
/// it to exit, then SIGKILLs it.
pub fn stop_child(child: &mut Child, signal: Signal) {
    if let Ok(None) = child.try_wait() {
        // Our own child, not yet reaped: its PID is still its own.
        signal_child(child, signal);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A lab child (`sockscope proxy`, `sockscope upstream`, or any command)
/// whose PID is exposed; stdout and stderr go to a log file. SIGKILL when
/// the spawning thread dies; on drop SIGTERM, a bounded wait (5 s), then
/// SIGKILL, by PID; its log (last 40 lines) printed when the test is
/// panicking.
pub struct LabProcess {
    /// What the messages call it, e.g. `sockscope proxy`.
    what: String,
    proc: LoggedChild,
}

impl LabProcess {
    /// Starts `cmd`; `what` names it in messages.
    pub fn command(what: &str, cmd: &mut Command) -> LabProcess {
        let proc = LoggedChild::spawn(cmd, Signal::KILL)
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        LabProcess {
            what: what.to_owned(),
            proc,
        }
    }

    /// Starts `sockscope ARGS...`; `name` labels its log.
    pub fn sockscope(name: &str, args: &[&str]) -> LabProcess {
        LabProcess::command(
            &format!("sockscope {name}"),
            Command::new(env!("CARGO_BIN_EXE_sockscope")).args(args),
        )
    }

    /// Starts `sockscope ARGS...` and waits ([`wait_listening`], bounded:
    /// 10 s, never connecting) until it listens on `listen`: `IP:PORT` (a
    /// TCP listener in `ss -ltn`) or `unix:PATH` (a UNIX stream listener
    /// in /proc/net/unix).
    pub fn listening(name: &str, args: &[&str], listen: &str) -> LabProcess {
        let mut p = LabProcess::sockscope(name, args);
        let what = format!("sockscope {name} listening on {listen}");
        match listen.strip_prefix("unix:") {
            Some(path) => wait_listening(&what, || unix_listening(path), || p.assert_running()),
            None => wait_listening(&what, || tcp_listening(listen), || p.assert_running()),
        }
        p
    }

    /// `sockscope proxy --listen LISTEN --upstream U... EXTRA...`, waited
    /// for ([`LabProcess::listening`]); an upstream without a scheme is
    /// `IP:PORT` (the proxy's `http://` is added).
    pub fn proxy(listen: &str, upstreams: &[&str], extra: &[&str]) -> LabProcess {
        let mut args = vec!["proxy".to_owned(), "--listen".into(), listen.into()];
        for u in upstreams {
            args.push("--upstream".into());
            args.push(
                if u.contains(':') && !u.starts_with("unix:") && !u.starts_with("http") {
                    format!("http://{u}")
                } else {
                    (*u).to_owned()
                },
            );
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LabProcess::listening("proxy", &args, listen)
    }

    /// A real Prometheus listening on `listen`, with `config` as its
    /// `prometheus.yml` and its data in `dir`.
    pub fn prometheus(dir: &Path, config: &str, listen: &str) -> LabProcess {
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        LabProcess::command(
            "prometheus",
            prereq::command("prometheus").args([
                &format!("--config.file={}", file.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={listen}"),
            ]),
        )
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        self.proc.assert_running(&self.what);
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        stop_child(&mut self.proc.child, Signal::TERM);
        if std::thread::panicking() {
            eprintln!(
                "----- {} log (last 40 lines) -----\n{}",
                self.what,
                last_lines(&self.log(), 40)
            );
        }
    }
}

/// Waits (bounded: 10 s) until `listening()` holds, calling `alive()`
/// (which panics when the process died) between checks. Never connects,
/// so no probe connection takes a port or leaves a TIME_WAIT behind.
pub fn wait_listening(what: &str, mut listening: impl FnMut() -> bool, mut alive: impl FnMut()) {
    wait_for(what, Duration::from_secs(10), || {
        alive();
        if listening() {
            Ok(())
        } else {
            Err("not listening yet".into())
        }
    });
}

/// PIDs whose parent is `pid` (from /proc/*/stat).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// VmRSS of `pid` in KiB (/proc/PID/status), `None` once it is gone.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The open descriptor numbers of `pid` (/proc/PID/fd).
pub fn fd_numbers(pid: u32) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    v.sort();
    v
}

/// Sets the soft RLIMIT_NOFILE of another process with prlimit(2), its
/// hard limit unchanged; returns the previous (soft, hard).
pub fn set_nofile_of(pid: u32, soft: u64) -> (u64, u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit struct of this frame; a null new limit reads.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit({pid}): {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; a null old limit is allowed.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit({pid}, NOFILE={soft}): {}",
        std::io::Error::last_os_error()
    );
    (old.rlim_cur, old.rlim_max)
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (up to the
/// hard limit); returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit struct of this frame.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    if rl.rlim_cur < want {
        rl.rlim_cur = want.min(rl.rlim_max);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    }
    rl.rlim_cur
}

/// An external command's exit status, stdout and stderr, for a failure
/// message.
pub fn output_text(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` to its end (a spawn failure panics, naming the command).
pub fn run_cmd(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `cmd` and panics with [`output_text`] unless it succeeded.
pub fn assert_ok(cmd: &mut Command) -> Output {
    let o = run_cmd(cmd);
    assert!(o.status.success(), "{cmd:?} failed:\n{}", output_text(&o));
    o
}

/// [`assert_ok`]'s stdout, as text.
pub fn ok_stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&assert_ok(cmd).stdout).into_owned()
}

/// The value of `key` (e.g. `"CapEff:"`) in `/proc/PID/status`, trimmed.
pub fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

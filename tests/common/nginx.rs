//! A real nginx with its own config in a temp dir, and the config of a
//! reverse proxy.

use std::process::{Child, Command};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use super::netns::run_in_netns;
use super::prereq;
use super::process::{child_pids, last_lines, spawn_logged, stop_child};
use super::truth::tcp_listening;
use super::wait::wait_for;

/// Runs `body` in a private network namespace ([`run_in_netns`]); panics
/// first when nginx is missing ([`prereq::tool`]).
pub fn run_in_netns_with_nginx(test_name: &str, body: impl FnOnce()) {
    prereq::tool("nginx");
    run_in_netns(test_name, body);
}

/// The `events { }` block of nginx when the test does not care.
pub const NGINX_EVENTS: &str = "worker_connections 1024;";

/// A real nginx started with its own config in a temp dir (mode 0755,
/// `user root;` as root so the worker reaches sockets in it): `daemon off;`,
/// `master_process on`, one worker, pid, error log (level `info`) and every
/// temp path in the dir, `access_log off`. The master runs in its own
/// process group. Stopped on drop: SIGTERM to the master, a bounded wait
/// (5 s), then SIGKILL to the master and to its process group (a worker
/// that outlived it).
pub struct Nginx {
    child: Child,
    workers: Vec<u32>,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `events` and `http` as the contents of those
    /// blocks and waits (bounded: 10 s) until it listens on `listen`
    /// (`IP:PORT`, checked with `ss -ltn`, never by connecting) and its
    /// worker runs.
    pub fn start(events: &str, http: &str, listen: &str) -> Nginx {
        let bin = prereq::tool("nginx");
        let dir = tempfile::Builder::new()
            .prefix("sockscope-nginx-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        // Temp paths only for the modules compiled in (nginx-light lacks
        // some); `nginx -V` names the removed ones `--without-http_X_module`.
        let v = Command::new(&bin).arg("-V").output().unwrap();
        let configure = String::from_utf8_lossy(&v.stderr).into_owned();
        let mut temp_paths = format!("client_body_temp_path {d}/client_body;\n");
        for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
            if !configure.contains(&format!("--without-http_{m}_module")) {
                temp_paths.push_str(&format!("{m}_temp_path {d}/{m};\n"));
            }
        }
        let conf = format!(
            "{user}\n\
             daemon off;\n\
             master_process on;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{\n{events}\n}}\n\
             http {{\n\
             access_log off;\n\
             {temp_paths}\
             {http}\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, &conf).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"));
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        // SIGTERM (not SIGKILL) when the spawning thread dies, so the
        // master stops its worker too.
        let child = spawn_logged(&mut cmd, &dir.path().join("stderr.log"), Signal::TERM)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut nginx = Nginx {
            child,
            workers: Vec::new(),
            dir,
        };
        let listen = listen.to_owned();
        nginx.workers = wait_for(
            &format!("nginx listening on {listen} with its worker"),
            Duration::from_secs(10),
            || {
                nginx.assert_running();
                let workers = child_pids(nginx.child.id());
                if tcp_listening(&listen) && workers.len() == 1 {
                    Ok(workers)
                } else {
                    Err(format!("workers {workers:?}"))
                }
            },
        );
        nginx
    }

    /// The worker's PID (`worker_processes 1`).
    pub fn worker_pid(&self) -> u32 {
        self.workers[0]
    }

    /// Panics (with the config and error log) if the master has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "nginx exited: {status}\n----- config -----\n{}\n----- error log -----\n{}{}",
                std::fs::read_to_string(self.dir.path().join("nginx.conf")).unwrap_or_default(),
                self.error_log(),
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
            );
        }
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pgid = Pid::from_child(&self.child);
        stop_child(&mut self.child, Signal::TERM);
        // A worker that outlived its master is still in the group; ESRCH
        // once everything has exited.
        let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        if std::thread::panicking() {
            eprintln!(
                "----- nginx error log (last 60 lines) -----\n{}",
                last_lines(&self.error_log(), 60)
            );
        }
    }
}

/// The `http { }` body of a reverse proxy on `listen` toward the
/// `upstream` block `u` (`upstream u { ... }`, its `keepalive` pool or
/// none): HTTP/1.1 toward it with the `Connection` header emptied, so a
/// keep-alive upstream never closes first (with nginx's default
/// `Connection: close` request header it would race nginx for who closes
/// first, TIME_WAIT on either side) and, without a pool, nginx closes each
/// upstream connection after its response, like `sockscope proxy
/// --keepalive 0`. Client connections may carry any number of requests
/// (the default 1000 would make a keep-alive load client reconnect).
pub fn nginx_proxy_http(listen: &str, upstream: &str) -> String {
    format!(
        "{upstream}\n\
         server {{\n\
         listen {listen};\n\
         keepalive_requests 100000;\n\
         location / {{\n\
         proxy_pass http://u;\n\
         proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n\
         }}\n\
         }}"
    )
}

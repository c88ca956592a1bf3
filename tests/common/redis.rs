//! A real `redis-server` on a free port, for the shared-limit tests. Stop and start it
//! again on the same port to simulate an outage.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: 0,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        // A port taken between `free_port` and the bind: another one.
        for _ in 0..5 {
            r.port = super::free_port();
            if r.try_spawn(&[]) {
                return r;
            }
        }
        panic!("redis-server did not come up on five free ports")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Start (again) on the same port; waits until it answers PING.
    pub fn resume(&mut self) {
        self.spawn(&[]);
    }

    fn spawn(&mut self, extra: &[&str]) {
        if !self.try_spawn(extra) {
            panic!("redis-server did not answer PING on port {}", self.port);
        }
    }

    /// Start redis-server and wait for its PING; `false` when it did not come up (its
    /// port was taken between `free_port` and its bind: it exits at once).
    fn try_spawn(&mut self, extra: &[&str]) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is required for these tests (run scripts/test.sh, which installs it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cmd(&["PING"]).is_some_and(|r| r.contains("PONG")) {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Freeze the server (SIGSTOP): it accepts connections and answers nothing, as a node
    /// that hangs; `thaw` resumes it.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            super::signal_child(c, sig);
        }
    }

    /// Kill the server (its data is gone, as after a crash without persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send one command (RESP) and return the raw reply, or `None` if unreachable.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The value of the one fixed-window (`count`) counter in this server, 0 if absent.
    pub fn count_counter(&self) -> u64 {
        let keys = self
            .cmd(&["KEYS", "*plugin-limit-count:v1:*"])
            .unwrap_or_default();
        let Some(key) = keys.lines().find(|l| l.contains("plugin-limit-count")) else {
            return 0;
        };
        let v = self.cmd(&["GET", key]).unwrap_or_default();
        v.lines().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-node Redis Cluster (no replicas) on free ports.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                // A node's cluster bus listens on its port + 10000, which must exist.
                let mut r = Redis {
                    port: 0,
                    child: None,
                    dir: tempfile::tempdir().unwrap(),
                };
                // A port taken between `free_port` and the bind: another one.
                for _ in 0..5 {
                    r.port = std::iter::repeat_with(super::free_port)
                        .find(|p| *p < 55536)
                        .unwrap_or_default();
                    let cluster = [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ];
                    if r.try_spawn(&cluster) {
                        return r;
                    }
                }
                panic!("redis-server did not come up on five free ports")
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is required (package redis-tools, installed with redis-server)");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|n| {
            n.cmd(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// The seed-node list for `limits.redis.nodes`.
    pub fn seeds_yaml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}

//! A real OTLP/HTTP receiver (`otlp_receiver.py`, decoding with the `opentelemetry-proto`
//! package of the test venv) on a free port; the spans it received, as JSON.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OtlpReceiver {
    pub port: u16,
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        assert!(
            std::path::Path::new(python).exists(),
            "{python} is missing: run scripts/test.sh, which creates the venv with opentelemetry-proto"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.jsonl");
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/common/otlp_receiver.py"
            ))
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the OTLP receiver starts");
        // It binds port 0 and prints the port it got (no port handed out and lost).
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("the OTLP receiver's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the OTLP receiver did not listen: {line:?}"));
        OtlpReceiver {
            port,
            child,
            out,
            _dir: dir,
        }
    }

    /// The URL to export to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The spans of `trace_id`, once at least `n` have arrived (at most 15 s).
    pub fn trace(&self, trace_id: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans of {trace_id} arrived: {spans:?}",
                spans.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every byte the gateway sent.
    pub fn raw(&self) -> Vec<u8> {
        std::fs::read(self.out.with_extension("jsonl.raw")).unwrap_or_default()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

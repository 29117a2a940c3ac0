//! A volunteer's first `vantage run`, in a real terminal: the binary runs on a pseudo-terminal
//! (POSIX `posix_openpt`), so it asks for consent as it does for a person, draws its progress
//! bar, and prints its summary. Everything it measures is served by this test on 127.0.0.1.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};
use vantage_fixtures::http::{HttpFixture, Response};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

/// How long any one step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

/// `vantage` running on a pseudo-terminal, and everything it has shown so far.
struct Terminal {
    child: Child,
    master: std::fs::File,
    chunks: Receiver<Vec<u8>>,
    shown: Vec<u8>,
}

impl Terminal {
    /// Starts `vantage args` with a 120x40 terminal as its stdin, stdout and stderr.
    fn start(args: &[&str]) -> Terminal {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let size = Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&master, size).expect("window size");
        // NOCTTY: the terminal is the child's, not this test process's.
        let slave: OwnedFd = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open the terminal's slave side");
        let child = {
            let mut command = Command::new(VANTAGE);
            command
                .args(args)
                .env("TERM", "xterm")
                .env_remove("VANTAGE_AGGREGATOR")
                .env_remove("VANTAGE_PROBE_CC")
                .env_remove("VANTAGE_PROBE_ASN")
                .stdin(Stdio::from(slave.try_clone().expect("dup")))
                .stdout(Stdio::from(slave.try_clone().expect("dup")))
                .stderr(Stdio::from(slave));
            command.spawn().expect("start vantage")
            // The command, and with it this process's copies of the slave side, ends here, so
            // reading the master side ends when the child closes its own.
        };
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().expect("dup master");
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Linux answers EIO once every slave descriptor is closed: the end of the output.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            master,
            chunks,
            shown: Vec::new(),
        }
    }

    /// What the terminal shows so far, as text without escape sequences.
    fn text(&self) -> String {
        plain(&String::from_utf8_lossy(&self.shown))
    }

    /// Reads until the terminal shows `want`.
    fn wait_for(&mut self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.text().contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.shown.extend(chunk),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "the terminal never showed {want:?}; it shows:\n{}",
                        self.text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("vantage ended without showing {want:?}:\n{}", self.text())
                }
            }
        }
    }

    /// Types `keys` as a person would.
    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
        self.master.flush().expect("flush");
    }

    /// Waits for `vantage` to exit and for the last of its output; its exit code and the
    /// whole screen, as text.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("vantage did not exit; the terminal shows:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.shown.extend(chunk),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the terminal never closed"),
            }
        }
        (status.code(), self.text())
    }
}

/// `s` without ANSI control sequences (CSI `ESC [ ... final`, and two-byte `ESC x`), with
/// carriage returns dropped: the text a person reads, line by line.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A data directory and a list of three pages on `server`, in a fresh directory.
fn setup(name: &str, server: &HttpFixture) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("vantage-first-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = server.addr.port();
    let mut list = String::from("url,category_code,category_description,date_added,source,notes\n");
    for page in ["news", "rights", "forum"] {
        list.push_str(&format!(
            "http://127.0.0.1:{port}/{page},NEWS,News Media,2026-01-01,test,\n"
        ));
    }
    let file = dir.join("pages.csv");
    std::fs::write(&file, list).expect("write list");
    (
        dir.join("data").to_string_lossy().into_owned(),
        file.to_string_lossy().into_owned(),
    )
}

/// Three pages served on loopback, each after `delay`, so that the progress bar is drawn
/// more than once while they load.
async fn slow_pages(delay: Duration) -> HttpFixture {
    HttpFixture::start(Arc::new(move |_| {
        // The fixture's handler is synchronous; one request at a time (--concurrency 1) keeps
        // this pause from holding up anything else.
        std::thread::sleep(delay);
        Response::html("<html><head><title>News</title></head><body>Today's news.</body></html>")
    }))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_run_asks_for_consent_then_shows_progress_and_a_summary() {
    let server = slow_pages(Duration::from_millis(400)).await;
    let (data, list) = setup("consent", &server);
    let args = [
        "run",
        "--no-upload",
        "--list",
        &list,
        "--data-dir",
        &data,
        "--concurrency",
        "1",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (code, screen) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut term = Terminal::start(&args);
        term.wait_for("[y/N] ");
        let prompt = term.text();
        for part in [
            "Vantage measures whether websites and apps are blocked where you are",
            "What it does:",
            "What is shared:",
            "Your IP address is never written into a result",
            "Risks: anyone watching your connection",
            "may be illegal or dangerous",
            "Do you understand and want to continue? [y/N] ",
        ] {
            assert!(prompt.contains(part), "the prompt says {part:?}:\n{prompt}");
        }
        assert!(
            !prompt.contains("Measured"),
            "nothing is measured before the answer:\n{prompt}"
        );
        term.type_keys("y\n");
        term.finish()
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{screen}");
    // The progress bar, drawn while the pages load: time so far, count, rate, time left. Its
    // redraws erase each other in place, so once escape sequences are stripped they follow
    // each other on one line.
    assert!(
        screen.contains("00:00:00 ") && screen.contains(" 0/3 URLs, 0/s, time left not known yet"),
        "the bar shows at once, before a first result:\n{screen}"
    );
    let after_one = &screen[screen.find(" 1/3 URLs, ").expect("a bar after one result")..];
    let after_one = &after_one[..after_one.find(" left").expect("time left") + 5];
    assert!(
        after_one.contains("/s, about ") && after_one.len() < 40,
        "a rate and an estimate: {after_one:?}"
    );
    // The summary, after the bar is cleared (erased in place, so its text may still precede
    // the summary on the same line once escape sequences are stripped).
    let rest = &screen[screen.rfind("Measured ").expect("a summary")..];
    assert!(
        rest.lines()
            .next()
            .is_some_and(|l| l.starts_with("Measured 3 URLs in")
                && l.ends_with(": 0 blocked, 0 accessible, 0 down for everyone, 3 undetermined.")),
        "{screen}"
    );
    for line in [
        "Undetermined, and why:\n  3  no control: no test helper was asked",
        "A control measurement decides them: use --aggregator URL to get one.",
        "Results are tagged country ZZ and network AS0 (unknown: no aggregator was asked where \
         this machine is).",
        &format!("Results are stored in {data}."),
    ] {
        assert!(rest.contains(line), "the summary says {line:?}:\n{screen}");
    }
    assert!(
        !rest.contains("offline"),
        "pages that answered are no offline machine:\n{screen}"
    );
    assert!(
        screen.contains("created this probe's signing key in"),
        "{screen}"
    );
    assert!(
        std::path::Path::new(&data).join("consent").exists(),
        "consent is remembered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_is_asked_once_and_no_means_nothing_is_measured() {
    let server = slow_pages(Duration::ZERO).await;
    let (data, list) = setup("refuse", &server);
    let args: Vec<String> = ["run", "--no-upload", "--list", &list, "--data-dir", &data]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let again = args.clone();
    let (code, screen) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut term = Terminal::start(&args);
        term.wait_for("[y/N] ");
        term.type_keys("n\n");
        term.finish()
    })
    .await
    .expect("join");
    assert_eq!(code, Some(2), "{screen}");
    assert!(
        screen.contains("error: not measuring: consent was not given"),
        "{screen}"
    );
    assert!(!screen.contains("Measured"), "{screen}");
    let data_dir = std::path::Path::new(&data);
    assert!(!data_dir.join("consent").exists());
    assert!(!data_dir.join("vantage.db").exists(), "nothing stored");

    // Once given, consent is not asked again.
    std::fs::create_dir_all(data_dir).expect("dir");
    std::fs::write(data_dir.join("consent"), "consent given\n").expect("consent");
    let (code, screen) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = again.iter().map(String::as_str).collect();
        Terminal::start(&args).finish()
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains("[y/N]"), "{screen}");
    assert!(screen.contains("Measured 3 URLs"), "{screen}");
}

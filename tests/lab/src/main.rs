//! `vantage-lab`: the censorship lab. A router namespace censors a probe's traffic for real (a
//! lying resolver, an injector, iptables drops, resets and string matches, a filtering proxy,
//! tc shaping, an uplink cut) and the real `vantage` and `vantage-aggregator` must see it.
//! See README "Censorship lab".

mod apps;
mod carry;
mod censor;
mod check;
mod dnscheck;
mod drive;
mod evidence;
mod hygiene;
mod quic;
mod scenario;
mod servers;
mod topology;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vantage-lab",
    about = "The censorship lab: network namespaces in which a router censors for real, and the \
             real Vantage binaries measuring through it (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab, measure every scenario, cut the uplink, check the verdicts and the
    /// timeline, and remove the lab again (also on failure or Ctrl-C). Exits 1 when a check fails.
    Run {
        /// Logs, databases and the probes' data go here (kept afterwards).
        #[arg(long, default_value = "target/lab")]
        dir: PathBuf,
        /// Where `vantage` and `vantage-aggregator` are; default: beside this binary.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Skip the shutdown scenario (a run of about a minute instead of up to ten).
        #[arg(long)]
        no_shutdown: bool,
        /// Only the shutdown: no measurements; the daemons, the cut, the shutdown event and
        /// no phantom event (tests/lab/repeat.sh runs it N times in a row).
        #[arg(long, conflicts_with_all = ["no_shutdown", "sabotage"])]
        shutdown_only: bool,
        /// How long the uplink stays down, in seconds.
        #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(60..=600))]
        outage_secs: u64,
        /// Leave this domain uncensored so that its check fails: shows that a failing run
        /// still removes everything.
        #[arg(long, value_name = "DOMAIN")]
        sabotage: Option<String>,
    },
    /// Remove every namespace (and with it every link, rule and process) a lab run left.
    Cleanup,
    /// Print what a lab run would leave behind: lab namespaces and links. Exits 1 if any.
    Leftovers,
    /// (Run by the lab, in its Internet.) The web sites over HTTP and HTTPS.
    Web {
        /// Where to write the lab CA's certificate once the servers are up.
        #[arg(long)]
        ca_out: PathBuf,
    },
    /// (Run by the lab, in the router.) The ISP's filtering HTTP proxy.
    Proxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
    },
    /// (Run by the lab, in the router.) The DNS injector.
    Inject {
        /// The resolver whose queries it watches and whose address it forges.
        #[arg(long)]
        resolver: Ipv4Addr,
    },
    /// (Run by the lab, in its Internet.) A distant resolver, relaying with a delay.
    SlowDns {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long, default_value_t = 200)]
        delay_ms: u64,
    },
    /// GET an http:// URL into a file, retrying a 503 or a refused connection (the lab fetches
    /// the shutdown's evidence bundle with it from a probe's namespace).
    Fetch {
        url: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 60)]
        within_secs: u64,
    },
    /// Wait until a TCP connect to ADDR succeeds (from the namespace this runs in).
    Reach {
        addr: SocketAddr,
        #[arg(long, default_value_t = 20)]
        within_secs: u64,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vantage-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run {
            dir,
            bin_dir,
            no_shutdown,
            shutdown_only,
            outage_secs,
            sabotage,
        } => {
            if let Some(d) = &sabotage
                && !scenario::SITES.iter().any(|s| s.domain == d.as_str())
            {
                bail!("--sabotage {d}: not a lab domain");
            }
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .context("the binary's directory")?
                    .to_path_buf(),
            };
            let plan = drive::Plan {
                dir: std::path::absolute(&dir)?,
                bin_dir,
                shutdown: !no_shutdown,
                measure: !shutdown_only,
                outage: Duration::from_secs(outage_secs),
                sabotage,
            };
            // Ctrl-C or a kill: remove the lab before going (the run's own cleanup never
            // runs when the process is stopped by a signal).
            std::thread::spawn(|| {
                let Ok(rt) = runtime() else { return };
                rt.block_on(async {
                    let Ok(mut term) =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                });
                check::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
                eprintln!("vantage-lab: interrupted; removing the lab");
                let _ = topology::cleanup();
                std::process::exit(130);
            });
            let report = drive::run(&plan)?;
            let failed = report.checks.iter().filter(|c| c.failure.is_some()).count();
            for c in &report.checks {
                if let Some(f) = &c.failure {
                    eprintln!("vantage-lab: FAILED {}: {f}", c.what);
                }
            }
            eprintln!(
                "vantage-lab: {} checks, {failed} failed; logs in {}",
                report.checks.len(),
                plan.dir.display()
            );
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Cleanup => {
            let problems = topology::cleanup();
            if !problems.is_empty() {
                bail!("could not remove: {problems:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Leftovers => {
            let left = topology::leftovers()?;
            for l in &left {
                println!("{l}");
            }
            Ok(if left.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Web { ca_out } => {
            runtime()?.block_on(servers::web(&ca_out))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Proxy { listen, upstream } => {
            runtime()?.block_on(servers::proxy(listen, upstream))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::SlowDns {
            listen,
            upstream,
            delay_ms,
        } => {
            runtime()?.block_on(servers::slow_dns(
                listen,
                upstream,
                Duration::from_millis(delay_ms),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inject { resolver } => {
            servers::inject(resolver)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fetch {
            url,
            out,
            within_secs,
        } => {
            evidence::fetch(&url, &out, Duration::from_secs(within_secs))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reach { addr, within_secs } => {
            let started = Instant::now();
            loop {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(_) => return Ok(ExitCode::SUCCESS),
                    Err(e) if started.elapsed() > Duration::from_secs(within_secs) => {
                        bail!("{addr} not reachable within {within_secs} s: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

//! `serve`: the server, with the detectors and compaction running beside it.

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    /// The database file (SQLite), created if missing. With --store clickhouse://, the base
    /// name of this node's own files instead (its key, `FILE.key`, and the throughput server's
    /// certificate).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,

    /// Where measurements, keys and events are stored: the --db file (the default), or
    /// clickhouse://HOST:PORT/DB (its HTTP interface), which several `serve` nodes can share;
    /// they then take turns running the detectors (--lease-seconds).
    #[arg(long, value_name = "URL")]
    store: Option<vantage_aggregator::store::Location>,

    /// Never run the detectors on this node (an ingest-only node of a shared store).
    #[arg(long)]
    no_detect: bool,

    /// Keep no transparency log: accepted measurements are not appended and the log routes
    /// answer 404 (for measuring what the log costs; docs/transparency.md). The next start
    /// without it appends what was stored meanwhile.
    #[arg(long)]
    no_log: bool,

    /// Accept this witness's cosignatures of the log's checkpoints and serve them with the
    /// checkpoint (`POST /log/cosignature`; docs/transparency.md "Witnesses"). VERIFIER_KEY is
    /// what `vantage-aggregator witness --print-key` prints: NAME+KEYID+BASE64. Repeat it for
    /// each witness (at most 32).
    #[arg(long, value_name = "VERIFIER_KEY")]
    witness: Vec<String>,

    /// How long the detectors' lease lasts without renewal, in seconds: when the node running
    /// them dies, another of the same store takes over within this and a third of it.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    lease_seconds: u64,

    /// A MaxMind DB file for whoami (GeoLite2-ASN/-Country/-City, DB-IP ASN/Country Lite).
    /// Repeat it to give an ASN file and a country file; each answer comes from the first file
    /// that has it. Without --geoip or --prefixes whoami answers AS0 and ZZ.
    #[arg(long, value_name = "FILE.mmdb", conflicts_with = "prefixes")]
    geoip: Vec<PathBuf>,

    /// A CSV of `prefix,asn,cc` lines for whoami, instead of --geoip.
    #[arg(long, value_name = "FILE.csv")]
    prefixes: Option<PathBuf>,

    /// Refuse measurements from keys not allowed with `keys allow` or enrolled with a one-time
    /// token from `keys token` (default: trust on first use).
    #[arg(long)]
    require_enrolment: bool,

    /// The aggregator's signing key (created on first use); default: the database path + `.key`.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Operator test lists (`<cc>.csv`, `global.csv`) served before the built-in ones.
    #[arg(long, value_name = "DIR")]
    lists: Option<PathBuf>,

    /// Largest upload body in MiB, after decompression (413 beyond it).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    max_body_mib: usize,

    /// Decompressed upload bytes in flight across all uploads, in MiB. Each upload reserves what
    /// it may hold (7 MiB for a large or compressed body) before it is read; when the budget is
    /// spent, uploads are answered 503 with Retry-After and probes send them later.
    #[arg(long, value_name = "MIB", default_value_t = 96)]
    upload_budget_mib: usize,

    /// How much lower than searches, the store and the detectors an upload's processor work
    /// runs, in nice(2) steps (0 to 19; 0: the same). On a busy machine this keeps searches
    /// fast while uploads still use every cycle nothing else wants (BENCHMARKS.md).
    #[arg(long, value_name = "N", default_value_t = vantage_aggregator::ingest::limits::UPLOAD_NICENESS,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    upload_niceness: i32,

    /// Lines one key may have accepted per hour (0: no limit). Further lines are refused as
    /// "rate limited" and stay queued on the probe for later.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    lines_per_key_hour: u64,

    /// Keys that may be registered on first use per hour (0: no limit); with
    /// --require-enrolment, keys come only from tokens instead.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    new_keys_per_hour: u64,

    /// Connections open at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,

    /// Connections open at once from one address (for IPv6, one /64).
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections_per_source: usize,

    /// Exports streaming at once; more are answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_exports: usize,

    /// Seconds any request may take; an upload's body must arrive within three quarters of it.
    /// A connection on which nothing moves for 60 s, or whose request head takes 10 s, is closed.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    request_timeout_secs: u64,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Without it
    /// the server speaks plain HTTP, for use behind a TLS-terminating proxy or on loopback.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Also run the throughput server for the probes' throttling test on this address (TLS, with
    /// a self-signed certificate kept beside the database, which probes pin; see
    /// `GET /api/v1/throughput`). Off by default: each test downloads up to 2 MB.
    #[arg(long, value_name = "ADDR")]
    throughput_listen: Option<SocketAddr>,

    /// The test helper resolves names with this DNS server over UDP instead of the system's.
    #[arg(long, value_name = "IP:PORT")]
    th_resolver: Option<SocketAddr>,

    /// The test helper connects from this local address.
    #[arg(long, value_name = "IP")]
    th_local_addr: Option<IpAddr>,

    /// Let the test helper connect to private and other bogon addresses. Only for labs: on a
    /// public server this lets anyone probe the operator's own network.
    #[arg(long)]
    th_allow_private: bool,

    /// Detection thresholds (TOML; absent keys keep their defaults, which are documented in
    /// the source with the research they come from). See README "Timeline".
    #[arg(long, value_name = "FILE")]
    detect_config: Option<PathBuf>,

    /// Run the shutdown and blocking detectors this often, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    detect_every: u64,

    /// Extra CA certificates (PEM) the test helper trusts.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// The test helper's deadline in seconds for each connect, handshake and HTTP exchange.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    th_timeout: u64,
}

pub(super) async fn serve(args: ServeArgs) -> Result<()> {
    let mut helper = HelperConfig::default();
    let timeout = Duration::from_secs(args.th_timeout.max(1));
    helper.engine.timeouts.tcp_connect = timeout;
    helper.engine.timeouts.tls_handshake = timeout;
    helper.engine.timeouts.http = timeout;
    helper.engine.local_addr = args.th_local_addr;
    helper.engine.connect_to_bogons = args.th_allow_private;
    if let Some(r) = args.th_resolver {
        helper.resolvers = vec![Resolver::Udp(r)];
    }
    let roots = match &args.ca_file {
        Some(p) => TlsContext::load_pem(p)?,
        None => Vec::new(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(vantage_aggregator::api::tls::server_config(cert, key)?),
        _ => None,
    };
    let geo = match &args.prefixes {
        Some(p) => Geo::Prefixes(Prefixes::load(p)?),
        None if args.geoip.is_empty() => Geo::Unknown,
        None => Geo::Mmdb(
            args.geoip
                .iter()
                .map(|p| {
                    let db = Mmdb::open(p)?;
                    eprintln!(
                        "vantage-aggregator: geolocation from {} ({})",
                        p.display(),
                        db.database_type()
                    );
                    Ok(db)
                })
                .collect::<Result<_, vantage_aggregator::api::geo::MmdbError>>()?,
        ),
    };
    let mut detect = detect_config(args.detect_config.as_ref())?;
    // With a geolocation source, a probe counts for a network only with verified contact in
    // it (`signals::Admit`), in the detectors and the signals alike.
    detect.require_verified_network |= !matches!(geo, Geo::Unknown);
    let detect = Arc::new(detect);
    let verification = detect.verification();
    let location = args
        .store
        .clone()
        .unwrap_or_else(|| vantage_aggregator::store::Location::Sqlite(args.db.clone()));
    let storage = location
        .open_with_log(!args.no_log)
        .with_context(|| format!("cannot open the store {location}"))?;
    eprintln!("vantage-aggregator: storing in {location}");
    tokio::spawn(vantage_aggregator::store::compact::run(
        storage.clone(),
        Duration::from_secs(30),
    ));
    if args.no_detect {
        eprintln!("vantage-aggregator: this node does not run the detectors (--no-detect)");
    } else {
        let lease = Arc::new(vantage_aggregator::detect::Lease::new(
            node_name(),
            Duration::from_secs(args.lease_seconds.max(3)),
        ));
        tokio::spawn(lease.clone().keep(storage.clone()));
        tokio::spawn(vantage_aggregator::detect::run(
            storage.clone(),
            Arc::new(vantage_aggregator::detect::categories(
                args.lists.as_deref(),
            )),
            detect.clone(),
            Duration::from_secs(args.detect_every.max(1)),
            lease,
        ));
    }
    let ingest = IngestConfig {
        require_enrolment: args.require_enrolment,
        max_body_bytes: args.max_body_mib.max(1) << 20,
        limits: Arc::new(KeyLimits::new(
            args.lines_per_key_hour,
            args.new_keys_per_hour,
        )),
        ..IngestConfig::default()
    };
    let request_timeout = Duration::from_secs(args.request_timeout_secs.max(4));
    let limits = ServerLimits {
        upload_budget: ByteBudget::new(args.upload_budget_mib.max(1) << 20),
        exports: Slots::new(args.max_exports),
        body_timeout: request_timeout * 3 / 4,
        request_timeout,
        upload_niceness: args.upload_niceness,
    };
    let connections = ConnLimits {
        max_connections: args.max_connections.max(1),
        max_per_source: args.max_connections_per_source.max(1),
        ..ConnLimits::default()
    };
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.key", args.db.display())));
    let (signer, _) = vantage_probe::envelope::Identity::load_or_create(&key_path)?;
    eprintln!(
        "vantage-aggregator: test lists are signed with key {}",
        signer.public_key()
    );
    match storage.log() {
        Ok(_) => {
            let log_key = vantage_aggregator::log::LogKey::load(&key_path)?;
            eprintln!(
                "vantage-aggregator: transparency log {}, checkpoints verify with {}",
                log_key.origin(),
                log_key.verifier_key()
            );
            tokio::spawn(vantage_aggregator::log::run(
                storage.clone(),
                Arc::new(log_key),
                vantage_aggregator::log::PUBLISH_EVERY,
            ));
        }
        Err(why) => eprintln!("vantage-aggregator: no transparency log: {}", why.reason()),
    }
    if args.witness.len() > vantage_aggregator::api::log::MAX_WITNESSES {
        bail!(
            "at most {} --witness keys",
            vantage_aggregator::api::log::MAX_WITNESSES
        );
    }
    let witnesses = args
        .witness
        .iter()
        .map(|k| vantage_aggregator::log::note::WitnessVerifier::parse(k))
        .collect::<Result<Vec<_>, _>>()?;
    for w in &witnesses {
        eprintln!(
            "vantage-aggregator: accepting the cosignatures of witness {}",
            w.id()
        );
    }
    let state = AppState::new(helper, TlsContext::new(roots)?, storage, ingest, geo)
        .with_witnesses(witnesses)
        .with_limits(limits)
        .with_verification(verification)
        .with_detect_config(detect)
        .with_test_lists(signer, args.lists.clone());
    let state = match &location {
        vantage_aggregator::store::Location::Sqlite(path) => state.with_db_path(path.clone()),
        vantage_aggregator::store::Location::ClickHouse(_) => state,
    };
    let state = match args.throughput_listen {
        Some(addr) => {
            let server = ThroughputServer::bind(addr, &args.db).await?;
            let info = server.info()?;
            eprintln!(
                "vantage-aggregator: throughput server on {} (certificate sha256 {})",
                server.local_addr()?,
                info.cert_sha256
            );
            tokio::spawn(server.run());
            state.with_throughput(info)
        }
        None => state,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("vantage-aggregator listening on {scheme}://{local}");
    std::io::stdout().flush()?;
    serve_connections(listener, tls, router(state), connections, shutdown_signal()).await;
    eprintln!("vantage-aggregator: stopped");
    Ok(())
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// This process's name in the detectors' lease: the host, the process and a random part, so
/// that two nodes never share one, even in containers that all see pid 1.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut random = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{}-{random}", std::process::id())
}

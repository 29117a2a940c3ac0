//! A log read over HTTP(S) with the probe's own client: its checkpoint, a measurement's
//! inclusion proof and its tiles, fetched in rounds for the synchronous checks
//! ([`HttpTiles::run`], see the `tlog` module doc).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use url::Url;

use super::{Hash, MAX_NOTE_BYTES, MAX_PROOF_HASHES, MAX_TILE_BYTES, TileSource, TlogError, cut};
use crate::engine::{EngineConfig, TlsContext, Trace, client};

/// A measurement's inclusion proof as `GET /api/v1/log/proof/{id}` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The measurement id.
    pub id: String,
    /// Its leaf's index.
    pub leaf_index: u64,
    /// The leaf's bytes.
    pub leaf: Vec<u8>,
    /// The size of the tree the proof is against.
    pub tree_size: u64,
    /// The checkpoint the proof is against, as served (not yet verified).
    pub checkpoint: String,
    /// The RFC 9162 inclusion path, from the leaf's sibling up.
    pub hashes: Vec<Hash>,
}

/// What the log's server says of a measurement's proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofAnswer {
    /// The proof (still to be checked, [`verify_inclusion`](super::verify_inclusion)).
    Proof(InclusionProof),
    /// 404: the measurement is not in this log, or the server keeps no log.
    NotLogged(String),
    /// 503: not yet in a checkpoint, or the server is busy; ask again later.
    Later(Option<Duration>),
}

#[derive(serde::Deserialize)]
struct ProofWire {
    id: String,
    leaf_index: u64,
    leaf: String,
    tree_size: u64,
    checkpoint: String,
    inclusion_proof: Vec<String>,
}

/// Tiles, checkpoints and proofs of one aggregator's log over HTTP(S), with the probe's own
/// client. A check that needs tiles runs through [`HttpTiles::run`] (see the `tlog` module doc).
/// Fetched tiles are kept for the life of the value (each is checked against a root every
/// time it is used, so keeping one is safe).
pub struct HttpTiles {
    base: Url,
    engine: EngineConfig,
    tls: TlsContext,
    socks5: Option<std::net::SocketAddr>,
    timeout: Duration,
    max_tiles: usize,
    fetched: Mutex<HashMap<String, Vec<u8>>>,
    wanted: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for HttpTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpTiles({})", self.base)
    }
}

/// Rounds of fetching a run makes before giving up: a check needs two or three.
const MAX_ROUNDS: usize = 8;

impl HttpTiles {
    /// The log of the aggregator at `aggregator` (its base URL, as uploads use it), fetched
    /// with `engine`'s timeouts and `tls`'s roots, through `socks5` if given (as uploads).
    pub fn new(
        aggregator: &Url,
        engine: &EngineConfig,
        tls: &TlsContext,
        socks5: Option<std::net::SocketAddr>,
    ) -> Self {
        HttpTiles {
            base: aggregator.clone(),
            engine: engine.clone(),
            tls: tls.clone(),
            socks5,
            timeout: Duration::from_secs(30),
            max_tiles: 4096,
            fetched: Mutex::new(HashMap::new()),
            wanted: Mutex::new(BTreeSet::new()),
        }
    }

    /// At most `n` tiles fetched by one [`HttpTiles::run`] (default 4096, 70 MiB at most).
    pub fn max_tiles(mut self, n: usize) -> Self {
        self.max_tiles = n;
        self
    }

    fn url(&self, path: &str) -> Result<Url, TlogError> {
        self.base.join(path).map_err(|e| TlogError::Http {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    async fn get(&self, url: &Url, accept: &str, cap: usize) -> Result<client::Reply, TlogError> {
        let mut call = client::Call::get(url, accept);
        call.timeout = self.timeout;
        call.body_cap = cap + 1;
        call.socks5 = self.socks5;
        let reply = client::send(call, &self.engine, &self.tls, &Trace::new())
            .await
            .map_err(|e| TlogError::Http {
                url: url.to_string(),
                reason: format!("{}: {e}", e.failure()),
            })?;
        if reply.body.len() > cap {
            return Err(TlogError::Http {
                url: url.to_string(),
                reason: format!("the answer is longer than {cap} bytes"),
            });
        }
        Ok(reply)
    }

    /// `GET /log/checkpoint`: the latest checkpoint's note as served (not yet verified), or
    /// `None` when the server keeps no log (404).
    pub async fn checkpoint(&self) -> Result<Option<String>, TlogError> {
        let url = self.url("log/checkpoint")?;
        let reply = self.get(&url, "text/plain", MAX_NOTE_BYTES).await?;
        let bad = |reason: String| TlogError::Http {
            url: url.to_string(),
            reason,
        };
        match reply.status {
            200 => String::from_utf8(reply.body)
                .map(Some)
                .map_err(|_| bad("the checkpoint is not UTF-8".into())),
            404 => Ok(None),
            s => Err(bad(format!("HTTP {s}"))),
        }
    }

    /// `GET /api/v1/log/proof/{id}`: measurement `id`'s inclusion proof (not yet checked).
    pub async fn proof(&self, id: &str) -> Result<ProofAnswer, TlogError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlogError::Http {
                url: format!("{}api/v1/log/proof/{}", self.base, cut(id)),
                reason: "not a measurement id".into(),
            });
        }
        let url = self.url(&format!("api/v1/log/proof/{id}"))?;
        let reply = self.get(&url, "application/json", MAX_NOTE_BYTES).await?;
        let bad = |reason: String| TlogError::Http {
            url: url.to_string(),
            reason,
        };
        match reply.status {
            200 => {}
            404 => {
                let text = String::from_utf8_lossy(&reply.body);
                return Ok(ProofAnswer::NotLogged(crate::printable::one_line(
                    &text, 200,
                )));
            }
            503 => {
                let wait = reply
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::upload::retry_after(v, std::time::SystemTime::now()));
                return Ok(ProofAnswer::Later(wait));
            }
            s => return Err(bad(format!("HTTP {s}"))),
        }
        let wire: ProofWire =
            serde_json::from_slice(&reply.body).map_err(|e| bad(format!("not a proof: {e}")))?;
        if wire.id != id {
            return Err(bad(format!("a proof of {} instead", cut(&wire.id))));
        }
        if wire.inclusion_proof.len() > MAX_PROOF_HASHES {
            return Err(bad("a proof longer than any tree's".into()));
        }
        let leaf = B64
            .decode(&wire.leaf)
            .map_err(|_| bad("the leaf is not base64".into()))?;
        let hashes = wire
            .inclusion_proof
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b).ok())
                    .ok_or_else(|| bad("a proof hash is not the base64 of 32 bytes".into()))
            })
            .collect::<Result<Vec<Hash>, TlogError>>()?;
        Ok(ProofAnswer::Proof(InclusionProof {
            id: wire.id,
            leaf_index: wire.leaf_index,
            leaf,
            tree_size: wire.tree_size,
            checkpoint: wire.checkpoint,
            hashes,
        }))
    }

    /// Fetches one tile (`tile/...`) now. A partial tile the server no longer has (404) is
    /// read from the full tile in its place, as C2SP tlog-tiles allows.
    pub async fn fetch(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        let url = self.url(&format!("log/{path}"))?;
        let reply = self
            .get(&url, "application/octet-stream", MAX_TILE_BYTES)
            .await?;
        match reply.status {
            200 => Ok(reply.body),
            404 if path.contains(".p/") => {
                let full = path.split(".p/").next().unwrap_or(path);
                let url = self.url(&format!("log/{full}"))?;
                let reply = self
                    .get(&url, "application/octet-stream", MAX_TILE_BYTES)
                    .await?;
                match reply.status {
                    200 => Ok(reply.body),
                    s => Err(TlogError::Tile {
                        path: path.to_string(),
                        reason: format!("{url}: HTTP {s}"),
                    }),
                }
            }
            s => Err(TlogError::Tile {
                path: path.to_string(),
                reason: format!("{url}: HTTP {s}"),
            }),
        }
    }

    /// Runs `check` (e.g. `|t| verify_consistency(&old, &new, t)`) against this log's tiles,
    /// fetching what it asks for between rounds, until it needs no tile it does not have.
    pub async fn run<T>(
        &self,
        check: impl Fn(&dyn TileSource) -> Result<T, TlogError>,
    ) -> Result<T, TlogError> {
        let mut fetched_now = 0;
        for _ in 0..MAX_ROUNDS {
            self.lock_wanted().clear();
            let result = check(self);
            let wanted = std::mem::take(&mut *self.lock_wanted());
            if wanted.is_empty() {
                return result;
            }
            fetched_now += wanted.len();
            if fetched_now > self.max_tiles {
                return Err(TlogError::Http {
                    url: self.base.to_string(),
                    reason: format!("the check needs more than {} tiles", self.max_tiles),
                });
            }
            for path in wanted {
                let data = self.fetch(&path).await?;
                self.lock_fetched().insert(path, data);
            }
        }
        Err(TlogError::Http {
            url: self.base.to_string(),
            reason: format!("the check still needed tiles after {MAX_ROUNDS} rounds"),
        })
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_fetched(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TileSource for HttpTiles {
    /// A tile fetched by an earlier round of [`HttpTiles::run`], else
    /// [`TlogError::TileNotFetched`] (and the tile is fetched before the next round).
    fn tile(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        if let Some(data) = self.lock_fetched().get(path) {
            return Ok(data.clone());
        }
        self.lock_wanted().insert(path.to_string());
        Err(TlogError::TileNotFetched {
            path: path.to_string(),
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::tests::{checkpoint, signer};
    use crate::tlog::{StaticLog, entries, verify_checkpoint, verify_consistency};

    /// A log served over HTTP on loopback by a minimal server holding a StaticLog: HttpTiles
    /// fetches what the checks ask for, in rounds.
    #[tokio::test]
    async fn http_tiles_fetch_what_a_check_needs() {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let key = signer();
        let many: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().repeat(16)).collect();
        let log = StaticLog::from_leaves(&many).expect("log");
        let old = StaticLog::from_leaves(&many[..10]).expect("log");
        let cp = checkpoint(&log, &key);
        let old_cp = checkpoint(&old, &key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = std::sync::Arc::new(log.tiles.clone());
        let note = cp.note.clone();
        let requests = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (served, note, seen) = (served.clone(), note.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    loop {
                        let mut h = String::new();
                        match stream.read_line(&mut h).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) if h == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    seen.lock().expect("lock").push(path.clone());
                    let (status, body) = match path.strip_prefix("/log/") {
                        Some("checkpoint") => ("200 OK", note.into_bytes()),
                        Some(p) => match served.get(p) {
                            Some(b) => ("200 OK", b.clone()),
                            None => ("404 Not Found", Vec::new()),
                        },
                        None => ("404 Not Found", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let s = stream.get_mut();
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        let base = Url::parse(&format!("http://{addr}/")).expect("url");
        let tls = TlsContext::new(Vec::new()).expect("tls");
        let http = HttpTiles::new(&base, &EngineConfig::default(), &tls, None);
        let note = http.checkpoint().await.expect("fetched").expect("a log");
        let fetched = verify_checkpoint(&note, key.public()).expect("verifies");
        assert_eq!(fetched, cp);
        http.run(|t| verify_consistency(&old_cp, &fetched, t))
            .await
            .expect("consistent");
        let got = http
            .run(|t| entries(&fetched, 250, 300, t))
            .await
            .expect("entries");
        assert_eq!(got, many[250..300].to_vec());
        let asked = requests.lock().expect("lock").clone();
        assert!(asked.contains(&"/log/tile/0/000".to_string()), "{asked:?}");
        assert!(
            asked.contains(&"/log/tile/entries/001.p/44".to_string()),
            "{asked:?}"
        );
        // A tile asked for twice is fetched once.
        let mut sorted = asked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), asked.len(), "{asked:?}");
        // A tree the server does not have the tiles of fails with the tile's path.
        let bigger = StaticLog::from_leaves(&[many.clone(), many.clone()].concat()).expect("log");
        let e = http
            .run(|t| verify_consistency(&old_cp, &checkpoint(&bigger, &key), t))
            .await
            .expect_err("not served");
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        // A proof asked of a server that has none: 404 is "not logged".
        let answer = http.proof(&"ab".repeat(32)).await.expect("an answer");
        assert!(matches!(answer, ProofAnswer::NotLogged(_)), "{answer:?}");
        assert!(http.proof("../../etc").await.is_err());
    }
}

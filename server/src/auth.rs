//! Access control: API keys with roles, optionally limited to collections.
//!
//! Keys come from the config file as SHA-256 hashes (`[[auth.keys]]`); the plain key is never
//! stored, logged or compared. A request's `authorization: Bearer <key>` is hashed once and
//! compared with every configured hash in constant time (no early exit on a byte or a key).
//!
//! Two checks, at two depths:
//! - [`AuthLayer`] (tower, around every service): no or unknown key → UNAUTHENTICATED; a role
//!   below the method's minimum → PERMISSION_DENIED. It puts the [`Principal`] in the request's
//!   extensions. Health and reflection stay open (probes).
//! - the handlers, which alone see the collection in the decoded request, call
//!   [`Caller::check`]: a key limited to other collections gets PERMISSION_DENIED with the same
//!   message whether the collection exists or not, before the engine is touched. They also raise
//!   the role for request-dependent admin work (CompareVersions with `promote_alias`,
//!   CheckConsistency with `repair`).
//!
//! With no keys configured, every caller is the anonymous admin (`main.rs` refuses that on a
//! non-loopback address unless `--insecure-no-auth` is given).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use emberdb_proto::v1 as pb;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};

/// What a key may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, searches, evaluations, drift, canary comparisons without promotion, checks without
    /// repair, monitor listings.
    Reader = 0,
    /// Reader + Upsert, UpsertStream, Delete.
    Writer = 1,
    /// Everything: catalog changes, aliases, promotion, repair, monitors.
    Admin = 2,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// One `[[auth.keys]]` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Appears in logs and audit lines; the key itself never does.
    pub name: String,
    /// Hex SHA-256 of the key (64 hex digits).
    pub sha256: String,
    pub role: Role,
    /// Collections the key may touch (`*` as the last character globs); omitted = all.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
}

/// The `[auth]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub keys: Vec<KeyConfig>,
    /// When set, `/metrics` requires `authorization: Bearer <key>` with this hash.
    pub metrics_key_sha256: Option<String>,
}

/// A collection pattern: an exact name, or a prefix when it ends in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(s: &str) -> Result<Self, String> {
        let (body, glob) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!("{s:?}: `*` may only end a pattern"));
        }
        if !glob && body.is_empty() {
            return Err("a collection pattern must not be empty".into());
        }
        if body
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(format!("{s:?}: collection names are [A-Za-z0-9_-]"));
        }
        Ok(if glob {
            Pattern::Prefix(body.to_string())
        } else {
            Pattern::Exact(body.to_string())
        })
    }

    fn matches(&self, collection: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == collection,
            Pattern::Prefix(p) => collection.starts_with(p.as_str()),
        }
    }
}

/// Who is calling: the key's name, role and collections.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub role: Role,
    collections: Option<Arc<[Pattern]>>,
}

impl Principal {
    /// The caller when no keys are configured: admin over everything.
    pub fn anonymous() -> Self {
        Principal {
            name: Arc::from("anonymous"),
            role: Role::Admin,
            collections: None,
        }
    }

    /// Whether the key may touch `collection` at all (ListCollections shows only these).
    pub fn can_see(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(collection)))
    }

    /// PERMISSION_DENIED unless the key's role is at least `need`.
    pub fn require_role(&self, need: Role) -> Result<(), Status> {
        if self.role < need {
            return Err(Status::permission_denied(format!(
                "key {:?} has role {}; this call needs {}",
                &*self.name,
                self.role.as_str(),
                need.as_str()
            )));
        }
        Ok(())
    }

    /// PERMISSION_DENIED unless the key has `need` and may touch `collection`. The message is the
    /// same whether or not the collection exists.
    pub fn authorize(&self, need: Role, collection: &str) -> Result<(), Status> {
        self.require_role(need)?;
        if !self.can_see(collection) {
            // Neither the name nor whether it exists: a key must not learn what it cannot see.
            return Err(Status::permission_denied(format!(
                "key {:?} may not access this collection",
                &*self.name
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Key {
    hash: [u8; 32],
    principal: Principal,
}

/// The configured keys. Empty means access control is off.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
    metrics_hash: Option<[u8; 32]>,
}

/// Hex SHA-256 of a key, as `[[auth.keys]] sha256` wants it.
pub fn hash_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hash(field: &str, hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{field}: expected 64 hex digits (sha-256)"));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| format!("{field}: {e}"))?;
    }
    Ok(out)
}

/// Equality without an early exit, so timing does not tell how many bytes matched.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl Keyring {
    /// Validates the `[auth]` table: hashes are 64 hex digits, names are non-empty and unique,
    /// no two keys share a hash, patterns are names with an optional trailing `*`.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, String> {
        let mut keys: Vec<Key> = Vec::with_capacity(cfg.keys.len());
        for (i, k) in cfg.keys.iter().enumerate() {
            let field = format!("auth.keys[{i}]");
            if k.name.trim().is_empty() {
                return Err(format!("{field}.name must not be empty"));
            }
            if keys.iter().any(|o| &*o.principal.name == k.name.as_str()) {
                return Err(format!("{field}.name {:?} is used twice", k.name));
            }
            let hash = parse_hash(&format!("{field}.sha256"), &k.sha256)?;
            if keys.iter().any(|o| o.hash == hash) {
                return Err(format!("{field}.sha256 repeats another key's hash"));
            }
            let collections = match &k.collections {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|p| Pattern::parse(p).map_err(|e| format!("{field}.collections: {e}")))
                        .collect::<Result<Arc<[Pattern]>, _>>()?,
                ),
            };
            keys.push(Key {
                hash,
                principal: Principal {
                    name: Arc::from(k.name.as_str()),
                    role: k.role,
                    collections,
                },
            });
        }
        let metrics_hash = cfg
            .metrics_key_sha256
            .as_deref()
            .map(|h| parse_hash("auth.metrics_key_sha256", h))
            .transpose()?;
        Ok(Keyring { keys, metrics_hash })
    }

    /// Whether any key is configured (access control on).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The caller of a request with this `authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, Status> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let key = bearer(header).ok_or_else(|| {
            Status::unauthenticated("missing API key: send `authorization: Bearer <key>`")
        })?;
        let hash: [u8; 32] = Sha256::digest(key).into();
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            // Every key is compared; the match is remembered, not returned early.
            if ct_eq(&k.hash, &hash) {
                found = Some(k);
            }
        }
        found
            .map(|k| k.principal.clone())
            .ok_or_else(|| Status::unauthenticated("unknown API key"))
    }

    /// Whether a `/metrics` scrape with this `authorization` header may read.
    pub fn metrics_allowed(&self, header: Option<&[u8]>) -> bool {
        match &self.metrics_hash {
            None => true,
            Some(want) => {
                bearer(header).is_some_and(|key| ct_eq(want, &Sha256::digest(key).into()))
            }
        }
    }
}

fn bearer(header: Option<&[u8]>) -> Option<&[u8]> {
    let h = header?;
    let rest = h
        .strip_prefix(b"Bearer ")
        .or_else(|| h.strip_prefix(b"bearer "))?;
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

/// The least role each RPC needs before its request is read (request-dependent raises, such as
/// CompareVersions with `promote_alias`, are checked by the handler). `None`: open to all.
pub fn method_role(path: &str) -> Option<Role> {
    if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    let method = path.rsplit('/').next().unwrap_or("");
    Some(match method {
        "Upsert" | "UpsertStream" | "Delete" => Role::Writer,
        "CreateVersion" | "DropVersion" | "DropCollection" | "SetAlias" | "DeleteAlias"
        | "SetMonitor" | "DeleteMonitor" | "CreateSnapshot" | "ListSnapshots"
        | "DeleteSnapshot" => Role::Admin,
        "ListCollections" | "DescribeVersion" | "Get" | "Search" | "SearchBatch" | "Recall"
        | "Margin" | "Confusion" | "Actions" | "Project" | "Drift" | "CompareVersions"
        | "CheckConsistency" | "ListMonitors" | "ExportBundle" | "ListBundles"
        | "DownloadBundle" => Role::Reader,
        // Unknown methods are answered UNIMPLEMENTED by the router, but only to admins.
        _ => Role::Admin,
    })
}

/// Tower layer that authenticates every request (see the module doc).
#[derive(Clone)]
pub struct AuthLayer(pub Arc<Keyring>);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            keys: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    keys: Arc<Keyring>,
}

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let Some(need) = method_role(path) else {
            return futures::future::Either::Left(self.inner.call(req));
        };
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        // One hash per request: the audit line of a denial reuses the result.
        let (caller, verdict) = match self.keys.authenticate(header) {
            Ok(p) => {
                let v = p.require_role(need);
                (Some(p), v)
            }
            Err(e) => (None, Err(e)),
        };
        match verdict {
            Ok(()) => {
                if let Some(p) = caller {
                    req.extensions_mut().insert(p);
                }
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(status) => {
                if need >= Role::Writer {
                    let key = match &caller {
                        Some(p) => p.name.to_string(),
                        None if bearer(header).is_some() => "<unknown key>".into(),
                        None => "<no key>".into(),
                    };
                    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
                    let ext = req.extensions();
                    let peer = ext
                        .get::<TcpConnectInfo>()
                        .and_then(|i| i.remote_addr())
                        .or_else(|| {
                            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                                .and_then(|i| i.get_ref().remote_addr())
                        });
                    audit_line(
                        &key,
                        peer,
                        method_name(req.uri().path()),
                        "",
                        "",
                        status.code(),
                    );
                }
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One `audit` line: who did what to which collection, and how it ended. Never the key.
pub fn audit_line(
    key: &str,
    peer: Option<SocketAddr>,
    method: &str,
    collection: &str,
    version: &str,
    code: Code,
) {
    let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
    tracing::info!(
        target: "audit",
        key,
        peer = %peer,
        method,
        collection,
        version,
        code = ?code,
        "audit"
    );
}

/// For read handlers: PERMISSION_DENIED unless the request's caller has `need` on `collection`
/// (no audit line, no allocation).
pub fn check<T>(req: &Request<T>, need: Role, collection: &str) -> Result<(), Status> {
    tracing::Span::current().record("collection", collection);
    principal(req)?.authorize(need, collection)
}

/// A read request about one version (or alias) of one collection.
pub trait VersionScoped {
    fn scope(&self) -> (&str, &str);
}

macro_rules! version_scoped {
    ($($t:ty),*) => {$(
        impl VersionScoped for $t {
            fn scope(&self) -> (&str, &str) {
                (&self.collection, &self.version)
            }
        }
    )*};
}

version_scoped!(
    pb::DescribeVersionRequest,
    pb::RecallRequest,
    pb::MarginRequest,
    pb::ConfusionRequest,
    pb::ActionsRequest,
    pb::ProjectRequest,
    pb::GetRequest,
    pb::SearchRequest,
    pb::SearchBatchRequest
);

impl VersionScoped for pb::DriftRequest {
    fn scope(&self) -> (&str, &str) {
        let current = self.current.as_ref().map_or("", |w| w.version.as_str());
        (&self.collection, current)
    }
}

impl VersionScoped for pb::ExportBundleRequest {
    fn scope(&self) -> (&str, &str) {
        let current = self.current.as_ref().map_or("", |w| w.version.as_str());
        (&self.collection, current)
    }
}

/// [`check`] for a request about one version: the request's span records the version too.
pub fn check_scoped<T: VersionScoped>(req: &Request<T>, need: Role) -> Result<(), Status> {
    let (collection, version) = req.get_ref().scope();
    tracing::Span::current().record("version", version);
    check(req, need, collection)
}

/// The principal the auth layer attached. Fails closed: a request that did not pass the layer
/// is refused.
fn principal<T>(req: &Request<T>) -> Result<&Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::permission_denied("request was not authenticated"))
}

/// A handler's view of its caller: the principal the layer found, and the peer address.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    peer: Option<SocketAddr>,
}

impl Caller {
    /// The caller of `req` (see [`principal`]), with its peer address.
    pub fn of<T>(req: &Request<T>) -> Result<Caller, Status> {
        Ok(Caller {
            principal: principal(req)?.clone(),
            peer: req.remote_addr(),
        })
    }

    /// PERMISSION_DENIED unless the caller has `need` on `collection`.
    pub fn check(&self, need: Role, collection: &str) -> Result<(), Status> {
        tracing::Span::current().record("collection", collection);
        self.principal.authorize(need, collection)
    }

    /// PERMISSION_DENIED unless the caller has `need` and may see every collection (work that
    /// spans the whole server, such as a snapshot).
    pub fn check_server_wide(&self, need: Role) -> Result<(), Status> {
        self.principal.require_role(need)?;
        if self.principal.collections.is_some() {
            return Err(Status::permission_denied(format!(
                "key {:?} is limited to some collections; this call spans every collection",
                &*self.principal.name
            )));
        }
        Ok(())
    }

    /// Runs a write or admin call: checks `need` on `collection`, awaits `work` only when allowed,
    /// and writes the audit line of how it ended (denials included).
    pub async fn audited<T>(
        &self,
        method: &str,
        collection: &str,
        version: &str,
        need: Role,
        work: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        if !version.is_empty() {
            tracing::Span::current().record("version", version);
        }
        let result = match self.check(need, collection) {
            Ok(()) => work.await,
            Err(e) => Err(e),
        };
        self.audit(method, collection, version, &result);
        result
    }

    /// Writes the audit line of a write or admin call that ended with `result`.
    pub fn audit<T>(
        &self,
        method: &str,
        collection: &str,
        version: &str,
        result: &Result<T, Status>,
    ) {
        let code = match result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        audit_line(
            &self.principal.name,
            self.peer,
            method,
            collection,
            version,
            code,
        );
    }
}

#[cfg(test)]
mod tests;

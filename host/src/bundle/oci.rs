//! Bundles in OCI registries: `plait bundle push` and `pull`.
//!
//! A bundle is stored as an OCI artifact, the way Spin, wasmCloud and `wkg`
//! store components (OCI distribution spec v1.1, image manifest v1.1):
//!
//! - the manifest (`application/vnd.oci.image.manifest.v1+json`) has
//!   `artifactType: application/vnd.plait.bundle.v1`, and annotations
//!   `org.opencontainers.image.{title,version,description,authors,licenses}`
//!   from the bundle's manifest;
//! - its config blob is the bundle's `bundle.toml`
//!   (`application/vnd.plait.bundle.config.v1+toml`), so a registry's
//!   tools can read what a bundle is without fetching it;
//! - its one layer is the `.plait` file itself
//!   (`application/vnd.plait.bundle.v1.tar+gzip`), so a pull gives back the
//!   very bytes that were pushed, signature included.
//!
//! A pull checks every digest: the manifest's against `@sha256:…` when the
//! reference pins one, and the layer's against the manifest. Loopback
//! registries are spoken to over plain HTTP, others over HTTPS. A registry
//! that asks for credentials gets `PLAIT_REGISTRY_USERNAME` and
//! `PLAIT_REGISTRY_PASSWORD` (basic, or exchanged for a bearer token per
//! the distribution spec's token flow).

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::{BundleError, Manifest};
use crate::digest::Digest;

/// The artifact type of a bundle.
pub const ARTIFACT_TYPE: &str = "application/vnd.plait.bundle.v1";
/// The media type of its config blob (the bundle's manifest).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.plait.bundle.config.v1+toml";
/// The media type of its layer (the bundle file).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.plait.bundle.v1.tar+gzip";
/// The OCI image manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Where a bundle is in a registry: `HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// `path/to/repo`.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// `sha256:<hex>`, if pinned.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference (an `oci://` prefix is allowed).
    pub fn parse(text: &str) -> Result<Reference, BundleError> {
        let bad = |why: &str| {
            BundleError::Registry(format!(
                "`{text}` is not a registry reference ({why}); write it as `HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`, for example `ghcr.io/acme/document-intake:0.1.0`"
            ))
        };
        let rest = text.trim().trim_start_matches("oci://");
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest must be sha256:"))?;
                // Upper-case hex is the same digest; Plait writes lower case.
                let digest = Digest::parse(&format!("sha256:{}", hex.to_ascii_lowercase()))
                    .map_err(|_| bad("the digest must be sha256: and 64 hex digits"))?;
                (rest, Some(digest))
            }
            None => (rest, None),
        };
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad("the first part must be a registry host"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_owned())),
            _ => (path, None),
        };
        let valid_repository = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            });
        if !valid_repository {
            return Err(bad("the repository must be lower-case path segments"));
        }
        if let Some(tag) = &tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(bad("the tag must be letters, digits, `.`, `_` and `-`"));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The tag or digest a manifest is fetched by.
    fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    fn base(&self) -> String {
        let host = self.registry.split(':').next().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if loopback { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    schema_version: u32,
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

/// A registry session: credentials, and the bearer token once obtained.
struct Client {
    reference: Reference,
    credentials: Option<(String, String)>,
    token: Option<String>,
    max_body: usize,
}

impl Client {
    fn new(reference: &Reference, max_body: u64) -> Client {
        let credentials = match (
            std::env::var("PLAIT_REGISTRY_USERNAME"),
            std::env::var("PLAIT_REGISTRY_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) => Some((user, password)),
            _ => None,
        };
        Client {
            reference: reference.clone(),
            credentials,
            token: None,
            max_body: usize::try_from(max_body)
                .unwrap_or(usize::MAX)
                .saturating_add(1 << 20),
        }
    }

    /// Sends a request, following redirects and answering an
    /// authentication challenge once.
    async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<http::Response<Bytes>, BundleError> {
        let mut url = url.to_owned();
        let mut challenged = false;
        for _ in 0..8 {
            let mut request = Request::builder().method(method.clone()).uri(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(token) = &self.token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            } else if challenged && let Some((user, password)) = &self.credentials {
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
            }
            let request = request
                .header(header::CONTENT_LENGTH, body.len())
                .body(body.clone())
                .map_err(|error| {
                    BundleError::Registry(format!("bad request to `{url}`: {error}"))
                })?;
            let response = crate::telemetry::otlp::send_limited(request, self.max_body)
                .await
                .map_err(|error| {
                    BundleError::Registry(format!(
                        "the registry `{}` cannot be reached ({error})",
                        self.reference.registry
                    ))
                })?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
            {
                url = absolute(&url, location);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if challenge.to_ascii_lowercase().starts_with("bearer") {
                    self.token = Some(self.bearer_token(&challenge).await?);
                } else if self.credentials.is_none() {
                    return Err(self.unauthorized());
                }
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(self.unauthorized());
            }
            return Ok(response);
        }
        Err(BundleError::Registry(format!(
            "the registry redirected `{url}` too many times"
        )))
    }

    fn unauthorized(&self) -> BundleError {
        BundleError::Registry(format!(
            "the registry `{}` refused the credentials{}; set PLAIT_REGISTRY_USERNAME and PLAIT_REGISTRY_PASSWORD",
            self.reference.registry,
            if self.credentials.is_none() {
                " (none were given)"
            } else {
                ""
            }
        ))
    }

    /// The distribution spec's token flow: the challenge's realm gives a
    /// token for its service and scope.
    async fn bearer_token(&self, challenge: &str) -> Result<String, BundleError> {
        let parameters: std::collections::HashMap<String, String> = challenge
            .split_once(' ')
            .map_or("", |(_, rest)| rest)
            .split(',')
            .filter_map(|part| {
                let (key, value) = part.trim().split_once('=')?;
                Some((key.to_ascii_lowercase(), value.trim_matches('"').to_owned()))
            })
            .collect();
        let realm = parameters.get("realm").ok_or_else(|| {
            BundleError::Registry(format!(
                "the registry's challenge `{challenge}` names no realm"
            ))
        })?;
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(value) = parameters.get(key) {
                query.push(format!("{key}={}", value.replace(' ', "%20")));
            }
        }
        let url = if query.is_empty() {
            realm.clone()
        } else {
            format!("{realm}?{}", query.join("&"))
        };
        let mut request = Request::get(&url);
        if let Some((user, password)) = &self.credentials {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let request = request
            .body(Bytes::new())
            .map_err(|error| BundleError::Registry(format!("bad token request: {error}")))?;
        let response = crate::telemetry::otlp::send(request)
            .await
            .map_err(|error| {
                BundleError::Registry(format!(
                    "the registry's token service cannot be reached ({error})"
                ))
            })?;
        if !response.status().is_success() {
            return Err(self.unauthorized());
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(response.body()).map_err(|error| {
            BundleError::Registry(format!(
                "the registry's token service answered no token ({error})"
            ))
        })?;
        token.token.or(token.access_token).ok_or_else(|| {
            BundleError::Registry("the registry's token service answered no token".to_owned())
        })
    }

    async fn push_blob(&mut self, digest: &str, bytes: Bytes) -> Result<(), BundleError> {
        let base = self.reference.base();
        let exists = self
            .send(
                Method::HEAD,
                &format!("{base}/blobs/{digest}"),
                &[],
                Bytes::new(),
            )
            .await?;
        if exists.status().is_success() {
            return Ok(());
        }
        let started = self
            .send(
                Method::POST,
                &format!("{base}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await?;
        let location = match (started.status(), started.headers().get(header::LOCATION)) {
            (StatusCode::ACCEPTED, Some(location)) => location.to_str().unwrap_or("").to_owned(),
            (status, _) => return Err(self.refused("starting an upload", status, started.body())),
        };
        let location = absolute(&base, &location);
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={digest}");
        let done = self
            .send(
                Method::PUT,
                &put,
                &[("content-type", "application/octet-stream")],
                bytes,
            )
            .await?;
        if done.status() != StatusCode::CREATED {
            return Err(self.refused("uploading a blob", done.status(), done.body()));
        }
        Ok(())
    }

    fn refused(&self, what: &str, status: StatusCode, body: &[u8]) -> BundleError {
        BundleError::Registry(format!(
            "the registry `{}` refused {what} of `{}`: {status} {}",
            self.reference.registry,
            self.reference,
            String::from_utf8_lossy(&body[..body.len().min(500)]).trim()
        ))
    }
}

/// `base` + a `Location` that may be relative.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|scheme| base[scheme + 3..].find('/').map(|slash| scheme + 3 + slash))
        .unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

/// Pushes bundle `bytes` (whose manifest is `manifest`) to `reference`
/// (which needs a tag); returns the OCI manifest's digest.
pub async fn push(
    bytes: &[u8],
    manifest: &Manifest,
    manifest_bytes: &[u8],
    reference: &Reference,
) -> Result<Digest, BundleError> {
    let Some(tag) = &reference.tag else {
        return Err(BundleError::Registry(format!(
            "`{reference}` has no tag to push to; add one, for example `:{}`",
            manifest.version
        )));
    };
    if reference.digest.is_some() {
        return Err(BundleError::Registry(
            "a push goes to a tag; the digest is what the registry answers".to_owned(),
        ));
    }
    let mut client = Client::new(reference, bytes.len() as u64);
    let layer_digest = crate::digest::digest(bytes);
    let config_digest = crate::digest::digest(manifest_bytes);
    client
        .push_blob(&config_digest, Bytes::copy_from_slice(manifest_bytes))
        .await?;
    client
        .push_blob(&layer_digest, Bytes::copy_from_slice(bytes))
        .await?;
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.title".to_owned(),
        manifest.name.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.version".to_owned(),
        manifest.version.clone(),
    );
    if let Some(description) = &manifest.description {
        annotations.insert(
            "org.opencontainers.image.description".to_owned(),
            description.clone(),
        );
    }
    if !manifest.authors.is_empty() {
        annotations.insert(
            "org.opencontainers.image.authors".to_owned(),
            manifest.authors.join(", "),
        );
    }
    if let Some(license) = &manifest.license {
        annotations.insert(
            "org.opencontainers.image.licenses".to_owned(),
            license.clone(),
        );
    }
    let oci = OciManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_digest.to_string(),
            size: manifest_bytes.len() as u64,
            annotations: Default::default(),
        },
        layers: vec![Descriptor {
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            digest: layer_digest.to_string(),
            size: bytes.len() as u64,
            annotations: [(
                "org.opencontainers.image.title".to_owned(),
                format!("{}-{}.plait", manifest.name, manifest.version),
            )]
            .into(),
        }],
        annotations,
    };
    let body = serde_json::to_vec(&oci).expect("plain data");
    let digest = crate::digest::digest(&body);
    let base = reference.base();
    let response = client
        .send(
            Method::PUT,
            &format!("{base}/manifests/{tag}"),
            &[("content-type", MANIFEST_MEDIA_TYPE)],
            Bytes::from(body),
        )
        .await?;
    if response.status() != StatusCode::CREATED {
        return Err(client.refused("the manifest", response.status(), response.body()));
    }
    Ok(digest)
}

/// Pulls the bundle at `reference`: its bytes and the OCI manifest's
/// digest, every digest checked. `max_size` bounds what is downloaded.
pub async fn pull(reference: &Reference, max_size: u64) -> Result<(Vec<u8>, Digest), BundleError> {
    let mut client = Client::new(reference, max_size);
    let base = reference.base();
    let response = client
        .send(
            Method::GET,
            &format!("{base}/manifests/{}", reference.manifest_reference()),
            &[("accept", MANIFEST_MEDIA_TYPE)],
            Bytes::new(),
        )
        .await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(BundleError::Registry(format!(
            "the registry has no `{reference}`"
        )));
    }
    if !response.status().is_success() {
        return Err(client.refused("the manifest", response.status(), response.body()));
    }
    let body = response.body();
    let digest = crate::digest::digest(body);
    if let Some(pinned) = &reference.digest
        && *pinned != digest
    {
        return Err(BundleError::Registry(format!(
            "the registry answered a manifest with digest {digest} for `{reference}`, which pins {pinned}: it is not the pinned artifact"
        )));
    }
    let manifest: OciManifest = serde_json::from_slice(body).map_err(|error| {
        BundleError::Registry(format!("`{reference}` has no OCI image manifest ({error})"))
    })?;
    let layers: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|layer| layer.media_type == LAYER_MEDIA_TYPE)
        .collect();
    let [layer] = layers.as_slice() else {
        return Err(BundleError::Registry(format!(
            "`{reference}` is not a Plait bundle: it has {} layers of type `{LAYER_MEDIA_TYPE}`, not one",
            layers.len()
        )));
    };
    if layer.size > max_size {
        return Err(BundleError::Registry(format!(
            "`{reference}` is {}, over this host's `[bundles] max_size` of {}",
            crate::limits::format_size(layer.size),
            crate::limits::format_size(max_size)
        )));
    }
    let blob = client
        .send(
            Method::GET,
            &format!("{base}/blobs/{}", layer.digest),
            &[],
            Bytes::new(),
        )
        .await?;
    if !blob.status().is_success() {
        return Err(client.refused("the bundle blob", blob.status(), blob.body()));
    }
    let bytes = blob.into_body().to_vec();
    let found = crate::digest::digest(&bytes);
    if found != layer.digest || bytes.len() as u64 != layer.size {
        return Err(BundleError::Registry(format!(
            "the bundle blob of `{reference}` is {found} ({} bytes), not {} ({} bytes) as its manifest says: it was altered in the registry or on the way",
            bytes.len(),
            layer.digest,
            layer.size
        )));
    }
    Ok((bytes, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_tags_digests_and_ports() {
        let r = Reference::parse("127.0.0.1:5000/plait/document-intake:0.1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "plait/document-intake");
        assert_eq!(r.tag.as_deref(), Some("0.1.0"));
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2/plait/document-intake");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://ghcr.io/acme/intake@{digest}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(r.manifest_reference(), digest);
        assert!(r.base().starts_with("https://ghcr.io/"));
        for bad in [
            "intake:1",
            "ghcr.io/",
            "ghcr.io/Acme/x",
            "ghcr.io/a@sha256:12",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            absolute("http://127.0.0.1:5000/v2/x", "/v2/x/blobs/uploads/1?a=b"),
            "http://127.0.0.1:5000/v2/x/blobs/uploads/1?a=b"
        );
    }
}

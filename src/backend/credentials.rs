//! Where a backend's signing credentials come from: static keys from the configuration, or the standard
//! AWS chain (environment, profile, web identity, container or instance metadata), cached until shortly
//! before they expire.

use super::Backend;
use crate::config::{Backend as BackendConfig, BackendCredentials};
use crate::error::S3Error;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::{Duration, SystemTime};

/// Where the credentials for signing come from.
pub(super) enum CredentialSource {
    Static(Identity),
    /// The standard AWS chain, built on first use (it needs the runtime) and cached until shortly before
    /// the credentials expire.
    Chain {
        profile: Option<String>,
        region: String,
        provider: tokio::sync::OnceCell<
            Option<aws_credential_types::provider::SharedCredentialsProvider>,
        >,
        cached: std::sync::Mutex<Option<Credentials>>,
    },
}

/// Chain credentials are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

fn fresh(credentials: &Credentials) -> bool {
    credentials
        .expiry()
        .is_none_or(|e| e > SystemTime::now() + REFRESH_MARGIN)
}

impl Backend {
    /// The identity to sign the next request with.
    pub async fn identity(&self) -> Result<Identity, S3Error> {
        if let Some(identity) = self.ready_identity() {
            return Ok(identity);
        }
        // Loading or refreshing the AWS chain is a large future: boxed, so that it is not part of every
        // request's own future (which is moved, and copied, whole).
        Box::pin(self.load_identity()).await
    }

    /// Static credentials, or chain credentials still fresh: no waiting.
    fn ready_identity(&self) -> Option<Identity> {
        match &self.credentials {
            CredentialSource::Static(identity) => Some(identity.clone()),
            CredentialSource::Chain { cached, .. } => cached
                .lock()
                .expect("credential cache")
                .as_ref()
                .filter(|c| fresh(c))
                .map(|c| c.clone().into()),
        }
    }

    /// Chain credentials, loaded (the provider is built on first use) and cached.
    async fn load_identity(&self) -> Result<Identity, S3Error> {
        match &self.credentials {
            CredentialSource::Static(identity) => Ok(identity.clone()),
            CredentialSource::Chain {
                profile,
                region,
                provider,
                cached,
            } => {
                let provider = provider
                    .get_or_init(|| async {
                        use aws_smithy_http_client::tls;
                        let http = aws_smithy_http_client::Builder::new()
                            .tls_provider(tls::Provider::Rustls(
                                tls::rustls_provider::CryptoMode::Ring,
                            ))
                            .build_https();
                        let mut loader =
                            aws_config::defaults(aws_config::BehaviorVersion::latest())
                                .http_client(http)
                                .region(aws_config::Region::new(region.clone()));
                        if let Some(p) = profile {
                            loader = loader.profile_name(p);
                        }
                        let sdk = loader.load().await;
                        sdk.credentials_provider()
                    })
                    .await;
                use aws_credential_types::provider::ProvideCredentials;
                let unavailable = || S3Error::storage_unavailable();
                let Some(provider) = provider else {
                    log::error!(
                        "backend {}: the AWS chain has no credentials provider",
                        self.config.name
                    );
                    return Err(unavailable());
                };
                let creds = provider.provide_credentials().await.map_err(|e| {
                    // The chain's error names which providers were tried; it holds no secret.
                    log::error!(
                        "backend {}: no credentials from the AWS chain: {e}",
                        self.config.name
                    );
                    unavailable()
                })?;
                *cached.lock().expect("credential cache") = Some(creds.clone());
                Ok(creds.into())
            }
        }
    }
}

impl CredentialSource {
    pub(super) fn from_config(config: &BackendConfig) -> CredentialSource {
        match &config.credentials {
            BackendCredentials::Static {
                access_key_id,
                secret_access_key,
            } => CredentialSource::Static(
                Credentials::new(
                    access_key_id.expose(),
                    secret_access_key.expose(),
                    None,
                    None,
                    "s3p-config",
                )
                .into(),
            ),
            BackendCredentials::Chain { profile } => CredentialSource::Chain {
                profile: profile.clone(),
                region: config.region.clone(),
                provider: tokio::sync::OnceCell::new(),
                cached: std::sync::Mutex::new(None),
            },
        }
    }
}

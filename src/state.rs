//! The configuration-derived state every request reads: validated config, key store, backends, token
//! sealer. Built once per (re)load and swapped as a whole.

use crate::auth::KeyStore;
use crate::backend::Backends;
use crate::config::Config;
use crate::listing::token::TokenSealer;
use crate::upload::multipart::{UploadIds, VersionIds};
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Everything a request needs, built once from a validated configuration.
pub struct State {
    pub config: Config,
    pub keys: KeyStore,
    pub backends: Backends,
    pub tokens: TokenSealer,
    /// Seals the multipart upload ids clients see (with the same secrets as the tokens).
    pub uploads: UploadIds,
    /// Seals the backends' version ids (same secrets).
    pub versions: VersionIds,
}

impl State {
    /// Resolves every backend's host name (DNS, a blocking call).
    pub fn new(config: Config) -> std::result::Result<State, String> {
        let backends = Backends::new(&config)?;
        Ok(State::with_backends(config, backends))
    }

    /// With backends at already resolved addresses (see `server::resolve`).
    pub fn at(
        config: Config,
        addresses: &crate::backend::Addresses,
    ) -> std::result::Result<State, String> {
        let backends = Backends::at(&config, addresses)?;
        Ok(State::with_backends(config, backends))
    }

    fn with_backends(config: Config, backends: Backends) -> State {
        let previous: Vec<&str> = config
            .previous_token_secrets
            .iter()
            .map(|s| s.expose())
            .collect();
        State {
            keys: KeyStore::new(&config),
            backends,
            tokens: TokenSealer::rotated(config.token_secret.expose(), &previous),
            uploads: UploadIds::rotated(config.token_secret.expose(), &previous),
            versions: VersionIds::rotated(config.token_secret.expose(), &previous),
            config,
        }
    }
}

/// The configuration-derived state, swapped as a whole on reload. Each request keeps the state it started
/// with, so a reload never changes a request half-way.
pub type SharedState = Arc<ArcSwap<State>>;

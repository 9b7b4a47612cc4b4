//! The core's Duo port, implemented by the real HTTPS client. The client is built on first use,
//! so a request answered from the store never loads the trust roots.

use std::sync::OnceLock;
use std::time::Instant;

use check_duo_core::ports::DuoApi;
use duo_auth::types::{AuthRequest, AuthStart, AuthStatus, Preauth};
use duo_auth::{Client, ClientConfig, Error};

use crate::config::DuoConfig;

/// Build the client `cfg` describes.
pub fn client(cfg: &DuoConfig) -> Result<Client, Error> {
    Client::new(ClientConfig {
        ikey: cfg.ikey.clone(),
        skey: cfg.skey.clone(),
        host: cfg.host.clone(),
        extra_ca_pem: cfg.ca_pem.clone(),
        call_timeout: cfg.call_timeout,
        sig_version: cfg.sig_version,
    })
}

/// `duo_auth::Client` as the core's [`DuoApi`], built when first called.
pub struct LazyDuo<'a> {
    cfg: &'a DuoConfig,
    client: OnceLock<Result<Client, Error>>,
}

impl<'a> LazyDuo<'a> {
    pub fn new(cfg: &'a DuoConfig) -> Self {
        LazyDuo {
            cfg,
            client: OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&Client, Error> {
        self.client
            .get_or_init(|| client(self.cfg))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl DuoApi for LazyDuo<'_> {
    fn preauth(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<Preauth, Error> {
        self.get()?.preauth(user, ipaddr, deadline)
    }

    fn auth(&self, req: &AuthRequest, deadline: Instant) -> Result<AuthStart, Error> {
        self.get()?.auth(req, deadline)
    }

    fn auth_status(&self, txid: &str, deadline: Instant) -> Result<AuthStatus, Error> {
        self.get()?.auth_status(txid, deadline)
    }

    fn preauth_verified(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<(Preauth, Option<String>), Error> {
        let opts = duo_auth::types::PreauthOptions {
            client_supports_verified_push: true,
            ..Default::default()
        };
        let a = self.get()?.preauth_with(user, ipaddr, &opts, deadline)?;
        Ok((a.preauth, a.txid))
    }

    fn auth_verified(
        &self,
        req: &AuthRequest,
        preauth_txid: Option<&str>,
        deadline: Instant,
    ) -> Result<AuthStart, Error> {
        self.get()?.auth_with_txid(req, preauth_txid, deadline)
    }
}

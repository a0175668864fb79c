//! Reaching a manager: `unix:///path` (root only), or `tcp://host:port` /
//! `host:port` with a client certificate (see [`crate::tls`]).

use anyhow::{Context, Result};
use shoal_api::pb::{Empty, Node, Task, control_client::ControlClient};
use tonic::transport::Channel;

/// A client whose calls wait out elections (see [`crate::retry`]).
pub type Client = ControlClient<crate::retry::Retrying>;

pub async fn connect(host: &str, tls: &crate::tls::TlsArgs) -> Result<Client> {
    Ok(ControlClient::new(crate::retry::Retrying::new(
        channel(host, tls).await?,
    )))
}

/// A connection to the manager at `host`, for any of its services.
pub async fn channel(host: &str, tls: &crate::tls::TlsArgs) -> Result<Channel> {
    let channel = if let Some(path) = host.strip_prefix("unix://") {
        shoal_api::local_socket::channel(path)
            .await
            .with_context(|| format!("cannot reach a manager at {host} (is shoal-manager running? set --host or SHOAL_HOST)"))?
    } else {
        let addr = host.strip_prefix("tcp://").unwrap_or(host);
        let addr = if addr.contains(':') {
            addr.to_owned()
        } else {
            format!("{addr}:{}", shoal_api::DEFAULT_PORT)
        };
        // Over TCP only with a client certificate (mutual TLS).
        shoal_pki::transport::channel(&addr, tls.dialer()?)
            .await
            .with_context(|| format!("cannot reach a manager at {addr} over TLS"))?
    };
    Ok(channel)
}

/// A gRPC error as the user should read it: the manager's message.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// Every node the manager knows.
pub async fn nodes(client: &mut Client) -> Result<Vec<Node>> {
    Ok(client
        .list_nodes(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .nodes)
}

/// Every task the manager keeps (history included).
pub async fn tasks(client: &mut Client) -> Result<Vec<Task>> {
    Ok(client
        .list_tasks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks)
}

//! Control API connections to the lab's managers over their local sockets
//! (root only, as the CLI's `unix://`): one channel per manager, dialled
//! again after a failure.

use std::{path::PathBuf, time::Duration};

use shoal_api::pb::control_client::ControlClient;
use tonic::transport::Channel;

pub type Client = ControlClient<Channel>;

/// A manager's socket, and the channel to it while it works.
pub struct Manager {
    pub node: String,
    pub socket: PathBuf,
    client: Option<Client>,
}

impl Manager {
    pub fn new(node: String, socket: PathBuf) -> Self {
        Self {
            node,
            socket,
            client: None,
        }
    }

    /// The client, dialling the socket if there is none (None: it refuses).
    pub async fn client(&mut self) -> Option<Client> {
        if self.client.is_none() {
            self.client = dial(self.socket.clone()).await;
        }
        self.client.clone()
    }

    /// Drops the channel after a failed call: the next call dials again.
    pub fn forget(&mut self) {
        self.client = None;
    }
}

async fn dial(path: PathBuf) -> Option<Client> {
    let channel = shoal_api::local_socket::channel_within(path, Duration::from_secs(1))
        .await
        .ok()?;
    Some(ControlClient::new(channel))
}

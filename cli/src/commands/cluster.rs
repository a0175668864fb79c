//! `shoal join-token` and `shoal version`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use shoal_api::{
    VersionInfo,
    pb::{Empty, NodeRole, RotateJoinTokenRequest},
};

use crate::{
    client::{self, Client, status_error},
    output::Format,
};

#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    Worker,
    Manager,
}

#[derive(Args)]
pub struct JoinToken {
    /// Whose join token: the one for workers or the one for managers.
    role: Role,
    /// Replace the token with a new one; nodes with the old one can no longer join.
    #[arg(long)]
    rotate: bool,
    /// Print the token only.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn join_token(client: &mut Client, args: JoinToken) -> Result<()> {
    let role = match args.role {
        Role::Worker => NodeRole::Worker,
        Role::Manager => NodeRole::Manager,
    };
    let info = if args.rotate {
        client
            .rotate_join_token(RotateJoinTokenRequest { role: role as i32 })
            .await
            .map_err(status_error)?
            .into_inner()
    } else {
        client
            .get_cluster(Empty {})
            .await
            .map_err(status_error)?
            .into_inner()
    };
    let token = match role {
        NodeRole::Worker => info.worker_token,
        NodeRole::Manager => info.manager_token,
    };
    if args.quiet {
        println!("{token}");
        return Ok(());
    }
    if args.rotate {
        println!("Successfully rotated {} join token.\n", role.word());
    }
    let nodes = client::nodes(client).await?;
    let leader = nodes
        .iter()
        .filter_map(|n| n.manager_status.as_ref())
        .find(|m| m.leader)
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    println!(
        "To add a {} to this swarm, run the following command:\n",
        role.word()
    );
    println!("    shoal swarm join --token {token} {leader}\n");
    Ok(())
}

pub async fn version(host: &str, tls: &crate::tls::TlsArgs, format: Format) -> Result<()> {
    let info = VersionInfo::of(
        "shoal",
        env!("CARGO_PKG_VERSION"),
        shoal_agent_common::LAYOUT_VERSION,
    );
    // Like `docker version`: the client always, the server when it answers.
    let server = match client::connect(host, tls).await {
        Ok(mut c) => c
            .get_version(Empty {})
            .await
            .map(|r| r.into_inner())
            .map_err(status_error),
        Err(e) => Err(e),
    };
    let as_json = || {
        let server = server.as_ref().ok().map(|s| {
            serde_json::json!({
                "Component": "shoal-manager", "Version": s.version, "Os": s.os, "Arch": s.arch,
                "RaftId": s.raft_id, "LeaderRaftId": s.leader_raft_id,
            })
        });
        serde_json::json!({ "Client": info, "Server": server })
    };
    match format.as_str() {
        "json" => println!("{}", as_json()),
        "table" => {
            println!("Client: {}", info.component);
            println!(" Version:       {}", info.version);
            println!(" eBPF layout:   v{}", info.ebpf_layout);
            println!(" OS/Arch:       {}/{}", info.os, info.arch);
            match &server {
                Ok(s) => {
                    println!("\nServer: shoal-manager");
                    println!(" Version:       {}", s.version);
                    println!(" OS/Arch:       {}/{}", s.os, s.arch);
                    println!(" Raft ID:       {:x}", s.raft_id);
                    println!(
                        " Leader:        {}",
                        if s.raft_id == s.leader_raft_id {
                            "yes"
                        } else {
                            "no"
                        }
                    );
                }
                Err(error) => println!("\nServer: {error:#}"),
            }
        }
        // `docker version --format '{{.Server.Version}}'`.
        template => {
            let template = crate::output::template::GoTemplate::parse(template)?;
            println!(
                "{}",
                template.execute(&crate::output::template::to_value(&as_json()))?
            );
        }
    }
    if server.is_err() {
        std::process::exit(1);
    }
    Ok(())
}

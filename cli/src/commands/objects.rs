//! `shoal secret …` and `shoal config …`: named blobs services mount.
//! Secret data never comes back from the manager; config data does.

use std::io::Read;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{
    ConfigSpec, Empty, IdRequest, Meta, SecretSpec, UpdateConfigRequest, UpdateSecretRequest,
};

use super::resolve;
use crate::{
    client::{Client, status_error},
    compose::convert::FileObject,
    output::{Format, Listing, ago, print_inspect, rfc3339},
};

/// `secret`'s and `config`'s subcommands. Their texts say `{object}`,
/// `{objects}` or `{Object}`, which [`Kind::name_texts`] replaces with the
/// kind's own word: both kinds share these doc comments.
#[derive(Subcommand)]
pub enum ObjectCommand {
    /// Create a {object} from a file or STDIN.
    Create {
        /// Name of the {object}.
        name: String,
        /// The file holding its content, or - to read STDIN.
        file: String,
        /// {Object} labels (key=value); repeatable.
        #[arg(short, long)]
        label: Vec<String>,
        /// Template driver: golang expands the content for each task
        /// ({{.Service.Name}}, {{env "VAR"}}, {{secret "target"}}…).
        #[arg(long, value_name = "string")]
        template_driver: Option<String>,
    },
    /// List {objects}.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Print an aligned table or one JSON object per line.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Display detailed information on one or more {objects}.
    Inspect {
        /// The {objects} to inspect (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more {objects}.
    #[command(alias = "remove")]
    Rm {
        /// The {objects} to remove (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Config => "config",
        }
    }

    /// `command` (`shoal secret` or `shoal config`) with this kind's word in
    /// place of [`ObjectCommand`]'s `{object}`, `{objects}` and `{Object}`
    /// in every text below it, so `shoal secret ls` reads "List secrets".
    pub fn name_texts(self, command: clap::Command) -> clap::Command {
        let args: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        let subcommands: Vec<String> = command
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        let mut command = match command.get_about().map(|a| self.name(&a.to_string())) {
            Some(about) => command.about(about),
            None => command,
        };
        for id in args {
            command = command.mut_arg(id, |arg| match arg.get_help() {
                Some(help) => {
                    let help = self.name(&help.to_string());
                    arg.help(help)
                }
                None => arg,
            });
        }
        for name in subcommands {
            command = command.mut_subcommand(name, |sub| self.name_texts(sub));
        }
        command
    }

    fn name(self, text: &str) -> String {
        let word = self.word();
        let capital = match self {
            Self::Secret => "Secret",
            Self::Config => "Config",
        };
        text.replace("{objects}", &format!("{word}s"))
            .replace("{object}", word)
            .replace("{Object}", capital)
    }

    pub(crate) async fn remove(self, client: &mut Client, id: String) -> Result<(), tonic::Status> {
        match self {
            Self::Secret => client.remove_secret(IdRequest { id }).await.map(drop),
            Self::Config => client.remove_config(IdRequest { id }).await.map(drop),
        }
    }

    /// Creates it, or (`id` given) asks the manager to keep it: only its
    /// labels may change, and new content is refused.
    pub(crate) async fn put(
        self,
        client: &mut Client,
        id: Option<String>,
        object: &FileObject,
        data: &[u8],
    ) -> Result<(), tonic::Status> {
        let (name, labels, data) = (object.name.clone(), object.labels.clone(), data.to_vec());
        let template_driver = object.template_driver.clone();
        let secret = || SecretSpec {
            name: name.clone(),
            labels: labels.clone(),
            data: data.clone(),
            template_driver: template_driver.clone(),
        };
        let config = || ConfigSpec {
            name: name.clone(),
            labels: labels.clone(),
            data: data.clone(),
            template_driver: template_driver.clone(),
        };
        match (self, id) {
            (Self::Secret, None) => client.create_secret(secret()).await.map(drop),
            (Self::Secret, Some(id)) => client
                .update_secret(UpdateSecretRequest {
                    id,
                    spec: Some(secret()),
                })
                .await
                .map(drop),
            (Self::Config, None) => client.create_config(config()).await.map(drop),
            (Self::Config, Some(id)) => client
                .update_config(UpdateConfigRequest {
                    id,
                    spec: Some(config()),
                })
                .await
                .map(drop),
        }
    }
}

/// One as listed (a secret's data never comes back: empty).
pub(crate) struct Item {
    pub(crate) meta: Meta,
    pub(crate) name: String,
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    pub(crate) data: Vec<u8>,
}

fn read_data(file: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input")?;
    } else {
        data = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    }
    Ok(data)
}

pub(crate) async fn list(client: &mut Client, kind: Kind) -> Result<Vec<Item>> {
    Ok(match kind {
        Kind::Secret => client
            .list_secrets(Empty {})
            .await
            .map_err(status_error)?
            .into_inner()
            .secrets
            .into_iter()
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                Item {
                    meta: s.meta.unwrap_or_default(),
                    name: spec.name,
                    labels: spec.labels,
                    data: Vec::new(),
                }
            })
            .collect(),
        Kind::Config => client
            .list_configs(Empty {})
            .await
            .map_err(status_error)?
            .into_inner()
            .configs
            .into_iter()
            .map(|c| {
                let spec = c.spec.unwrap_or_default();
                Item {
                    meta: c.meta.unwrap_or_default(),
                    name: spec.name,
                    labels: spec.labels,
                    data: spec.data,
                }
            })
            .collect(),
    })
}

pub async fn run(client: &mut Client, kind: Kind, command: ObjectCommand) -> Result<()> {
    let word = kind.word();
    match command {
        ObjectCommand::Create {
            name,
            file,
            label,
            template_driver,
        } => {
            let template_driver = template_driver.unwrap_or_default();
            if !template_driver.is_empty() && template_driver != "golang" {
                anyhow::bail!(
                    "--template-driver {template_driver:?}: the only template driver is golang"
                );
            }
            let data = read_data(&file)?;
            let labels = label
                .iter()
                .map(|l| crate::commands::service_flags::parse_label(l))
                .collect::<Result<_>>()?;
            let meta = match kind {
                Kind::Secret => {
                    client
                        .create_secret(SecretSpec {
                            name,
                            labels,
                            data,
                            template_driver,
                        })
                        .await
                        .map_err(status_error)?
                        .into_inner()
                        .meta
                }
                Kind::Config => {
                    client
                        .create_config(ConfigSpec {
                            name,
                            labels,
                            data,
                            template_driver,
                        })
                        .await
                        .map_err(status_error)?
                        .into_inner()
                        .meta
                }
            };
            println!("{}", meta.unwrap_or_default().id);
        }
        ObjectCommand::Ls { quiet, format } => {
            let mut items = list(client, kind).await?;
            items.sort_by(|a, b| a.name.cmp(&b.name));
            let mut listing = match kind {
                Kind::Secret => Listing::new(&[
                    ("ID", "ID"),
                    ("NAME", "Name"),
                    ("DRIVER", "Driver"),
                    ("CREATED", "CreatedAt"),
                    ("UPDATED", "UpdatedAt"),
                ]),
                Kind::Config => Listing::new(&[
                    ("ID", "ID"),
                    ("NAME", "Name"),
                    ("CREATED", "CreatedAt"),
                    ("UPDATED", "UpdatedAt"),
                ]),
            };
            for item in &items {
                let mut row = vec![item.meta.id.clone(), item.name.clone()];
                if kind == Kind::Secret {
                    row.push(String::new());
                }
                row.push(ago(item.meta.created_at));
                row.push(ago(item.meta.updated_at));
                listing.row(row);
            }
            listing.print(format, quiet);
        }
        ObjectCommand::Inspect { names } => {
            let items = list(client, kind).await?;
            let mut out = Vec::new();
            for q in &names {
                let item = resolve(word, q, &items, |i| &i.meta.id, |i| &i.name)?;
                let mut spec = json!({ "Name": item.name, "Labels": item.labels });
                if kind == Kind::Config {
                    spec["Data"] = json!(shoal_api::base64::encode(&item.data));
                }
                out.push(json!({
                    "ID": item.meta.id,
                    "Version": { "Index": item.meta.version },
                    "CreatedAt": rfc3339(item.meta.created_at),
                    "UpdatedAt": rfc3339(item.meta.updated_at),
                    "Spec": spec,
                }));
            }
            print_inspect(out)?;
        }
        ObjectCommand::Rm { names } => {
            let items = list(client, kind).await?;
            for q in &names {
                let item = resolve(word, q, &items, |i| &i.meta.id, |i| &i.name)?;
                kind.remove(client, item.meta.id.clone())
                    .await
                    .map_err(status_error)?;
                println!("{q}");
            }
        }
    }
    Ok(())
}

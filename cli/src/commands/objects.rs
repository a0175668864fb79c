//! `shoal secret …` and `shoal config …`: named blobs services mount.
//! Secret data never comes back from the manager; config data does.

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use shoal_api::pb::{
    ConfigSpec, Empty, IdRequest, Meta, SecretSpec, UpdateConfigRequest, UpdateSecretRequest,
};

use super::{resolve, tasks::natural_cmp};
use crate::{
    client::{Client, status_error},
    compose::convert::FileObject,
    output::{
        Columns, Filters, Format, Listing, ago, inspect::fail_on_missing, listing::labels_text,
        print_inspect_as, rfc3339,
    },
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
        /// Secret driver: Shoal keeps secrets in its own encrypted store, so
        /// any external driver is refused (secrets only).
        #[arg(short, long)]
        driver: Option<String>,
        /// Template driver: golang expands the content for each task
        /// ({{.Service.Name}}, {{env "VAR"}}, {{secret "target"}}…).
        #[arg(long, value_name = "string")]
        template_driver: Option<String>,
    },
    /// List {objects}.
    #[command(alias = "list")]
    Ls {
        /// Filter output based on conditions provided (id, label, name).
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Format output: 'table' (default), 'table TEMPLATE', 'json', or a Go TEMPLATE.
        #[arg(long, default_value_t)]
        format: Format,
    },
    /// Display detailed information on one or more {objects}.
    Inspect {
        /// The {objects} to inspect (ID or name).
        #[arg(required = true)]
        names: Vec<String>,
        /// Format output: 'json', 'pretty', or a Go TEMPLATE over the inspect JSON.
        #[arg(short, long)]
        format: Option<String>,
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
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

    /// The keys Docker's `secret ls` / `config ls` take.
    fn filter_keys(self) -> &'static [&'static str] {
        match self {
            Self::Secret => &["id", "label", "name", "names"],
            Self::Config => &["id", "label", "name"],
        }
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

/// `secret create --driver`: Docker hands the secret to a driver plugin;
/// Shoal has none, so naming one is an error (configs have no such flag).
fn refuse_driver(kind: Kind, driver: Option<&str>) -> Result<()> {
    match (kind, driver) {
        (_, None) => Ok(()),
        (Kind::Config, Some(_)) => bail!("unknown flag: --driver"),
        (Kind::Secret, Some(driver)) => bail!(
            "secret driver {driver:?} is not available: Shoal keeps secrets in its own \
             encrypted store and has no secret driver plugins"
        ),
    }
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
            driver,

            template_driver,
        } => {
            refuse_driver(kind, driver.as_deref())?;
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
        ObjectCommand::Ls {
            filter,
            quiet,
            format,
        } => {
            let filters = Filters::parse(&filter, kind.filter_keys())?;
            let mut items = list(client, kind).await?;
            items.sort_by(|a, b| natural_cmp(&a.name, &b.name));
            listing(kind, &items, &filters).print(&format, quiet)?;
        }
        ObjectCommand::Inspect {
            names,
            format,
            pretty,
        } => {
            let pretty = pretty || format.as_deref() == Some("pretty");
            let items = list(client, kind).await?;
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for q in &names {
                match resolve(word, q, &items, |i| &i.meta.id, |i| &i.name) {
                    Ok(item) if pretty => print!("{}", pretty_text(kind, item)),
                    Ok(item) => out.push(inspect_json(kind, item)),
                    Err(error) => missing.push(error),
                }
            }
            if !pretty {
                print_inspect_as(out, format.as_deref())?;
            }
            fail_on_missing(missing)?;
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

pub static SECRET_COLUMNS: Columns = Columns {
    table: "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
    headers: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("CreatedAt", "CREATED"),
        ("UpdatedAt", "UPDATED"),
        ("Labels", "LABELS"),
    ],
};

pub static CONFIG_COLUMNS: Columns = Columns {
    table: "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
    headers: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("CreatedAt", "CREATED"),
        ("UpdatedAt", "UPDATED"),
        ("Labels", "LABELS"),
    ],
};

/// `ls` rows: Docker's secret or config context (full IDs, ages, labels
/// as `k=v,…`); `name` is a prefix, `names` (secrets) exact names.
fn listing(kind: Kind, items: &[Item], filters: &Filters) -> Listing {
    let mut listing = Listing::new(match kind {
        Kind::Secret => &SECRET_COLUMNS,
        Kind::Config => &CONFIG_COLUMNS,
    });
    let passes = |item: &Item| {
        filters.prefix("id", &item.meta.id)
            && filters.prefix("name", &item.name)
            && filters.exact("names", &item.name)
            && filters.labels("label", |k| item.labels.get(k).map(String::as_str))
    };
    for item in items.iter().filter(|i| passes(i)) {
        let mut row = json!({
            "ID": item.meta.id,
            "Name": item.name,
            "CreatedAt": ago(item.meta.created_at),
            "UpdatedAt": ago(item.meta.updated_at),
            "Labels": labels_text(&item.labels),
        });
        if kind == Kind::Secret {
            row["Driver"] = json!("");
        }
        listing.row(row);
    }
    listing
}

/// `inspect`'s object, as the API shows it (a secret's data never).
fn inspect_json(kind: Kind, item: &Item) -> serde_json::Value {
    let mut spec = json!({ "Name": item.name, "Labels": item.labels });
    if kind == Kind::Config {
        spec["Data"] = json!(shoal_api::base64::encode(&item.data));
    }
    json!({
        "ID": item.meta.id,
        "Version": { "Index": item.meta.version },
        "CreatedAt": rfc3339(item.meta.created_at),
        "UpdatedAt": rfc3339(item.meta.updated_at),
        "Spec": spec,
    })
}

/// `inspect --pretty`, in Docker's layout for each kind.
fn pretty_text(kind: Kind, item: &Item) -> String {
    let mut out = String::new();
    let labels = |out: &mut String| {
        if !item.labels.is_empty() {
            out.push_str("Labels:\n");
            for (k, v) in &item.labels {
                if v.is_empty() {
                    out.push_str(&format!(" - {k}\n"));
                } else {
                    out.push_str(&format!(" - {k}={v}\n"));
                }
            }
        }
    };
    match kind {
        Kind::Secret => {
            out.push_str(&format!("ID:              {}\n", item.meta.id));
            out.push_str(&format!("Name:              {}\n", item.name));
            labels(&mut out);
            out.push_str("Driver:            \n");
            out.push_str(&format!(
                "Created at:        {}\n",
                pretty_time(item.meta.created_at)
            ));
            out.push_str(&format!(
                "Updated at:        {}\n",
                pretty_time(item.meta.updated_at)
            ));
        }
        Kind::Config => {
            out.push_str(&format!("ID:\t\t\t{}\n", item.meta.id));
            out.push_str(&format!("Name:\t\t\t{}\n", item.name));
            labels(&mut out);
            out.push_str(&format!(
                "Created at:            \t{}\n",
                pretty_time(item.meta.created_at)
            ));
            out.push_str(&format!(
                "Updated at:            \t{}\n",
                pretty_time(item.meta.updated_at)
            ));
            out.push_str("Data:\n");
            out.push_str(&String::from_utf8_lossy(&item.data));
            out.push('\n');
        }
    }
    out
}

/// A time as Docker's pretty inspect prints one (Go's time.String, UTC).
fn pretty_time(ms: i64) -> String {
    let text = rfc3339(ms);
    // 2024-05-01T10:00:00.123Z -> 2024-05-01 10:00:00.123 +0000 UTC
    match text.strip_suffix('Z').and_then(|t| t.split_once('T')) {
        Some((date, time)) => format!("{date} {time} +0000 UTC"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, name: &str, labels: &[(&str, &str)]) -> Item {
        Item {
            meta: Meta {
                id: id.into(),
                created_at: shoal_api::now_ms() - 3_600_000,
                updated_at: shoal_api::now_ms() - 60_000,
                ..Default::default()
            },
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data: b"hello".to_vec(),
        }
    }

    fn render(kind: Kind, filters: &[&str], format: &str) -> String {
        let items = [
            item(
                "s1aaaaaaaaaaaaaaaaaaaaaaa",
                "db_password",
                &[("com.docker.stack.namespace", "app")],
            ),
            item("s2bbbbbbbbbbbbbbbbbbbbbbb", "api_key", &[]),
        ];
        let flags: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let filters = Filters::parse(&flags, kind.filter_keys()).unwrap();
        listing(kind, &items, &filters)
            .render(&format.parse().unwrap(), false)
            .unwrap()
    }

    #[test]
    fn ls_prints_dockers_columns_and_fields() {
        let table = render(Kind::Secret, &[], "table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ID                          NAME          DRIVER    CREATED             UPDATED"
        );
        assert!(
            lines[1].starts_with(
                "s1aaaaaaaaaaaaaaaaaaaaaaa   db_password             About an hour ago   "
            ),
            "{table}"
        );
        let config = render(Kind::Config, &[], r"table {{.Name}}\t{{.Labels}}");
        assert_eq!(
            config,
            "NAME          LABELS\ndb_password   com.docker.stack.namespace=app\napi_key       \n"
        );
    }

    #[test]
    fn ls_filters_by_name_prefix_exact_names_ids_and_labels() {
        assert_eq!(
            render(Kind::Secret, &["name=db"], "{{.Name}}"),
            "db_password\n"
        );
        assert_eq!(render(Kind::Secret, &["names=db"], "{{.Name}}"), "");
        assert_eq!(
            render(
                Kind::Secret,
                &["names=api_key", "names=db_password"],
                "{{.Name}}"
            ),
            "db_password\napi_key\n"
        );
        assert_eq!(render(Kind::Config, &["id=s2"], "{{.Name}}"), "api_key\n");
        assert_eq!(
            render(
                Kind::Config,
                &["label=com.docker.stack.namespace=app"],
                "{{.Name}}"
            ),
            "db_password\n"
        );
        let flags = vec!["names=x".to_owned()];
        assert_eq!(
            Filters::parse(&flags, Kind::Config.filter_keys())
                .unwrap_err()
                .to_string(),
            "invalid filter 'names'"
        );
    }

    #[test]
    fn a_secret_driver_is_refused_by_name() {
        assert!(refuse_driver(Kind::Secret, None).is_ok());
        let error = refuse_driver(Kind::Secret, Some("vault"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("secret driver \"vault\" is not available"),
            "{error}"
        );
        assert!(refuse_driver(Kind::Config, Some("x")).is_err());
    }

    #[test]
    fn inspect_pretty_reads_as_dockers() {
        let text = pretty_text(
            Kind::Config,
            &item("c1", "site", &[("a", "1"), ("flag", "")]),
        );
        assert!(
            text.starts_with("ID:\t\t\tc1\nName:\t\t\tsite\nLabels:\n - a=1\n - flag\n"),
            "{text}"
        );
        assert!(text.ends_with("Data:\nhello\n"), "{text}");
        let secret = pretty_text(Kind::Secret, &item("s1", "pw", &[]));
        assert!(
            secret.contains("Name:              pw\nDriver:            \nCreated at:        "),
            "{secret}"
        );
        assert!(secret.contains(" +0000 UTC\n"), "{secret}");
    }
}

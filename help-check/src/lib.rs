//! Checks that a clap command tree explains itself: every command,
//! subcommand, flag and positional argument has a one-line help text, and no
//! two commands share one (two commands built from one shared enum or doc
//! comment, say `secret ls` and `config ls` both reading "List them").
//!
//! Each binary's unit tests call [`assert_documented`] on its `Cli::command()`.

use std::collections::BTreeMap;

use clap::{Arg, ArgAction, Command};

/// Panics with every problem [`problems`] finds, one per line.
pub fn assert_documented(root: &Command) {
    let found = problems(root);
    assert!(
        found.is_empty(),
        "{} help text problem(s) in `{}`:\n  {}",
        found.len(),
        root.get_name(),
        found.join("\n  ")
    );
}

/// Every help text problem in `root` and below, each naming the command or
/// argument path (`shoal service create --name`). `root` is the command as
/// clap's derive returns it, before clap adds `--help`, `--version` and the
/// `help` subcommand (those are skipped if present).
pub fn problems(root: &Command) -> Vec<String> {
    let mut found = Vec::new();
    let mut abouts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    walk(root, root.get_name(), &mut found, &mut abouts);
    for (about, paths) in abouts {
        if paths.len() > 1 {
            found.push(format!(
                "{} share one about text ({about:?}): each must say what it does",
                paths.join(", ")
            ));
        }
    }
    found
}

fn walk(
    command: &Command,
    path: &str,
    found: &mut Vec<String>,
    abouts: &mut BTreeMap<String, Vec<String>>,
) {
    match command.get_about().map(|a| a.to_string()) {
        Some(about) => {
            check_line(&about, path, "about", found);
            if !about.trim().is_empty() {
                abouts.entry(about).or_default().push(path.to_owned());
            }
        }
        None => found.push(format!("{path}: no about text")),
    }
    let mut helps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arg in command.get_arguments().filter(|a| !is_builtin(a)) {
        let arg_path = format!("{path} {}", arg_name(arg));
        match arg.get_help().map(|h| h.to_string()) {
            Some(help) => {
                check_line(&help, &arg_path, "help", found);
                if !help.trim().is_empty() {
                    helps.entry(help).or_default().push(arg_path);
                }
            }
            None => found.push(format!("{arg_path}: no help text")),
        }
    }
    for (help, paths) in helps {
        if paths.len() > 1 {
            found.push(format!(
                "{} share one help text ({help:?}): each must say what it does",
                paths.join(", ")
            ));
        }
    }
    for sub in command.get_subcommands().filter(|s| !is_builtin_help(s)) {
        walk(sub, &format!("{path} {}", sub.get_name()), found, abouts);
    }
}

fn check_line(text: &str, path: &str, what: &str, found: &mut Vec<String>) {
    if text.trim().is_empty() {
        found.push(format!("{path}: empty {what} text"));
    } else if text.contains('\n') {
        found.push(format!(
            "{path}: {what} text is more than one line: {text:?}"
        ));
    }
}

/// `--help` and `--version`, which clap writes itself.
fn is_builtin(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// The `help` subcommand clap adds to a built command.
fn is_builtin_help(command: &Command) -> bool {
    command.get_name() == "help"
        && command
            .get_about()
            .is_some_and(|a| a.to_string().starts_with("Print this message or the help"))
}

/// `--long`, `-s`, or `<VALUE>` for a positional argument.
fn arg_name(arg: &Arg) -> String {
    if let Some(long) = arg.get_long() {
        format!("--{long}")
    } else if let Some(short) = arg.get_short() {
        format!("-{short}")
    } else {
        let names = arg.get_value_names().unwrap_or_default();
        match names.first() {
            Some(name) => format!("<{name}>"),
            None => format!("<{}>", arg.get_id().as_str().to_uppercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented() -> Command {
        Command::new("tool")
            .about("Do things")
            .arg(Arg::new("verbose").long("verbose").help("Say more"))
            .subcommand(
                Command::new("ls")
                    .about("List things")
                    .arg(Arg::new("quiet").short('q').help("Only display IDs")),
            )
            .subcommand(Command::new("rm").about("Remove one or more things"))
    }

    #[test]
    fn a_documented_tree_has_no_problems_even_once_clap_adds_its_own() {
        let mut command = documented();
        assert_eq!(problems(&command), Vec::<String>::new());
        command.build();
        assert_eq!(problems(&command), Vec::<String>::new());
    }

    #[test]
    fn names_every_command_and_argument_without_help() {
        let command = documented().arg(Arg::new("file")).subcommand(
            Command::new("get")
                .arg(Arg::new("all").long("all").help(""))
                .arg(
                    Arg::new("count")
                        .short('n')
                        .action(ArgAction::Set)
                        .help("First line\nsecond line"),
                ),
        );
        assert_eq!(
            problems(&command),
            [
                "tool <FILE>: no help text",
                "tool get: no about text",
                "tool get --all: empty help text",
                "tool get -n: help text is more than one line: \"First line\\nsecond line\"",
            ]
        );
    }

    #[test]
    fn commands_sharing_an_about_text_are_named() {
        let shared = || Command::new("ls").about("List them");
        let command = documented()
            .subcommand(
                Command::new("secret")
                    .about("Manage secrets")
                    .subcommand(shared()),
            )
            .subcommand(
                Command::new("config")
                    .about("Manage configs")
                    .subcommand(shared()),
            )
            .subcommand(Command::new("stack").about("Manage configs"));
        assert_eq!(
            problems(&command),
            [
                "tool secret ls, tool config ls share one about text (\"List them\"): each must say what it does",
                "tool config, tool stack share one about text (\"Manage configs\"): each must say what it does",
            ]
        );
    }

    #[test]
    fn arguments_of_one_command_sharing_a_help_text_are_named() {
        let command = documented().subcommand(
            Command::new("update")
                .about("Update a thing")
                .arg(
                    Arg::new("a")
                        .long("update-order")
                        .help("stop-first or start-first"),
                )
                .arg(
                    Arg::new("b")
                        .long("rollback-order")
                        .help("stop-first or start-first"),
                ),
        );
        assert_eq!(
            problems(&command),
            [
                "tool update --update-order, tool update --rollback-order share one help text (\"stop-first or start-first\"): each must say what it does",
            ]
        );
    }
}

//! The `staff` commands: the accounts that log in at the node's desk, and
//! reading their passwords at the terminal or from standard input.

use crate::cli::args::StaffCmd;
use crate::cli::print::{clean, print_json};
use crate::ledger::Ledger;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal as _;

fn read_password(stdin: bool) -> Result<String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password: give it on standard input with --password-stdin");
    }
    let first = rpassword::prompt_password("password: ").context("cannot read the password")?;
    let again = rpassword::prompt_password("password again: ").context("cannot read the password")?;
    if first != again {
        bail!("the two passwords differ; nothing was written");
    }
    Ok(first)
}

pub(super) fn staff_command(cmd: StaffCmd) -> Result<()> {
    use crate::staff;
    match cmd {
        StaffCmd::Add { data, login, name, role, password_stdin } => {
            let role = staff::Role::parse(&role).context("role must be clerk, reviewer or admin")?;
            let password = read_password(password_stdin)?;
            let ledger = Ledger::open(&data.data)?;
            let m = staff::add(ledger.store().conn(), &login, &name, role, &password, crate::wall_clock_ms())?;
            say!("added {} ({}), {}", m.login, clean(&m.name), m.role.name());
        }
        StaffCmd::List { data, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let list = staff::list(ledger.store().conn())?;
            if json {
                print_json(&serde_json::to_value(&list)?)?;
            } else {
                for m in &list {
                    let state = if m.disabled { " (disabled)" } else { "" };
                    say!("{}\t{}\t{}{state}", m.login, clean(&m.name), m.role.name());
                }
            }
        }
        StaffCmd::Disable { data, login } => {
            staff::set_disabled(Ledger::open(&data.data)?.store().conn(), &login, true)?;
            say!("{login} disabled");
        }
        StaffCmd::Enable { data, login } => {
            staff::set_disabled(Ledger::open(&data.data)?.store().conn(), &login, false)?;
            say!("{login} enabled");
        }
        StaffCmd::Password { data, login, password_stdin } => {
            let password = read_password(password_stdin)?;
            staff::set_password(Ledger::open(&data.data)?.store().conn(), &login, &password)?;
            say!("{login}: password set");
        }
    }
    Ok(())
}

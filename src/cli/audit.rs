//! `authenta-keyd audit`: who changed what, and whether the hash chain is intact.

use super::output::say;
use super::output::{self, time};
use super::Context;
use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;

#[derive(Args)]
pub struct AuditArgs {
    /// Check the hash chain too; exit 65 when it is broken.
    #[arg(long)]
    verify: bool,
}

pub fn run(args: AuditArgs, context: &Context) -> Result<ExitCode> {
    let report = context.client().audit(args.verify)?;
    if context.json {
        output::print_json(&json!({
            "entries": report.entries.iter().map(|e| json!({
                "seq": e.seq,
                "at": time(e.at),
                "actor": e.actor.to_string(),
                "action": e.action,
                "key_id": e.key_id,
                "detail": e.detail,
            })).collect::<Vec<_>>(),
            "chain": report.chain.as_ref().map(|c| json!({
                "ok": c.ok,
                "checked": c.checked,
                "problem": c.problem,
            })),
        }));
    } else {
        let rows: Vec<Vec<String>> = report
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    time(e.at),
                    e.actor.to_string(),
                    e.action.clone(),
                    e.key_id.clone().unwrap_or_else(|| "-".into()),
                    e.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::print_table(&["SEQ", "AT", "ACTOR", "ACTION", "KEY", "DETAIL"], &rows);
        if let Some(chain) = &report.chain {
            match &chain.problem {
                None => say!("chain: intact ({} entries checked)", chain.checked),
                Some(problem) => say!("chain: BROKEN: {problem}"),
            }
        }
    }
    let broken = report.chain.is_some_and(|c| !c.ok);
    Ok(if broken {
        ExitCode::from(super::exit::DATA_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

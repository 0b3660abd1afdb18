//! Generated work for demos, tests and benchmarks: cases taken at this
//! node's windows and moved along their lifecycle as far as this node may
//! move them, through the same write path as every command.

use anyhow::Result;
use node::ledger::{Ledger, NewCase};
use proto::workflow::State;
use proto::{CaseId, Step, Tier};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A valid ID number (GB 11643) for a generated applicant.
pub fn id_number(rng: &mut StdRng) -> String {
    let first17 = format!(
        "511421{:04}{:02}{:02}{:03}",
        rng.gen_range(1940..2005),
        rng.gen_range(1..=12),
        rng.gen_range(1..=28),
        rng.gen_range(0..1000)
    );
    let check = proto::personal::id_check_digit(&first17).expect("17 digits");
    format!("{first17}{check}")
}

const SURNAMES: &[&str] = &["张", "王", "李", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高"];
const GIVEN: &[&str] = &["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛"];

/// A generated applicant's name: one of 225 surname and given-name pairs,
/// so a name search finds about one case in 225.
pub fn name(rng: &mut StdRng) -> String {
    format!("{}{}", SURNAMES[rng.gen_range(0..SURNAMES.len())], GIVEN[rng.gen_range(0..GIVEN.len())])
}

/// What [`generate`] did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Generated {
    pub cases: u64,
    pub events: u64,
}

/// Takes `count` new cases at this node and moves each as far as this node
/// may: pre-review and forward items decided above, decide and close items
/// decided here, rate some.
pub fn generate(ledger: &mut Ledger, count: u64, seed: u64, actor: &str) -> Result<Generated> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tier = ledger.identity().tier();
    // Each item with the materials it requires: the applicant brings them
    // all, so the deciding node can accept (受理 needs every one).
    let items: Vec<(String, Tier, Vec<String>)> = ledger
        .catalogue()
        .items
        .iter()
        .filter(|i| i.accepted_at.contains(&tier))
        .map(|i| {
            let required = i.materials.iter().filter(|m| m.required).map(|m| m.name.clone()).collect();
            (i.code.clone(), i.decided_by, required)
        })
        .collect();
    anyhow::ensure!(!items.is_empty(), "no catalogue item is taken at {tier} windows");
    let mut out = Generated::default();
    for _ in 0..count {
        let (item, decided_by, materials) = items[rng.gen_range(0..items.len())].clone();
        let name = name(&mut rng);
        let phone = format!("1{}{:09}", rng.gen_range(3..10), rng.gen_range(0..1_000_000_000u64));
        let case = ledger.new_case(
            actor,
            NewCase {
                item,
                applicant: name,
                id_number: id_number(&mut rng),
                phone: Some(phone),
                address: None,
                bundle: None,
                agent: None,
                materials,
            },
        )?;
        out.cases += 1;
        out.events += 1;
        out.events += advance(ledger, &case, decided_by == tier, &mut rng, actor)?;
    }
    Ok(out)
}

/// Moves a new case as far as this node may (see [`generate`]); returns
/// the events written.
pub fn advance(ledger: &mut Ledger, case: &CaseId, decide_here: bool, rng: &mut StdRng, actor: &str) -> Result<u64> {
    let mut events = 0;
    let roll: f64 = rng.gen();
    if roll < 0.05 {
        ledger.step(actor, case, Step::Withdraw, "申请人撤回")?;
        return Ok(1);
    }
    if roll < 0.10 {
        ledger.step(actor, case, Step::PrereviewReturn, "材料不全，一次性告知补正")?;
        return Ok(1);
    }
    ledger.step(actor, case, Step::PrereviewPass, "")?;
    events += 1;
    if rng.gen_bool(0.3) {
        ledger.add_material(actor, case, "户口簿")?;
        events += 1;
    }
    if !decide_here {
        ledger.step(actor, case, Step::Forward { to: proto::NodeId::new("") }, "")?;
        return Ok(events + 1);
    }
    for step in [Step::Accept, if rng.gen_bool(0.9) { Step::Approve } else { Step::Deny }, Step::Issue, Step::Close] {
        ledger.step(actor, case, step, "")?;
        events += 1;
    }
    debug_assert_eq!(ledger.case(case)?.state, State::Closed);
    if rng.gen_bool(0.6) {
        ledger.rate(actor, case, rng.gen_range(1..=3), None, "", "")?;
        events += 1;
    }
    Ok(events)
}

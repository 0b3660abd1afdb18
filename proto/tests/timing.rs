//! Time limits of cases (限时办结): due dates across holidays and make-up
//! working days, the clock stopped while suspended or waiting for the
//! applicant, warnings, and independence from the order events arrive in.

use crdts::VClock;
use proptest::prelude::*;
use proto::calendar::{timing, Calendar, CalendarFile, Day, Warning};
use proto::event::{Create, FieldValue};
use proto::{fold_case, Body, CaseId, Event, EventId, Hash, Hlc, Lane, NodeId, Step, Tier};

fn calendar() -> Calendar {
    let file: CalendarFile = serde_json::from_str(include_str!("../../deploy/calendar.json")).unwrap();
    Calendar::new(&file).unwrap()
}

fn d(s: &str) -> Day {
    Day::parse(s).unwrap()
}

/// Ten in the morning of a day in China, in ms.
fn at(day: &str) -> u64 {
    (d(day).start_ms() + 10 * 3600 * 1000) as u64
}

/// One case worked at one node: a creation with `limit` promised working
/// days, then `steps` at the given days, each having seen the ones before.
fn case(limit: u32, steps: &[(&str, Step)]) -> Vec<Event> {
    let origin = NodeId::new("511421101001");
    let case = CaseId::mint(&origin, 1);
    let mut events: Vec<Event> = Vec::new();
    let mut prev = Hash::ZERO;
    let bodies = std::iter::once((
        "2026-01-05",
        Body::Create(Create {
            item: "V001".into(),
            item_name: "城乡居民基本医疗保险参保登记".into(),
            catalogue_version: 1,
            accepted_at: vec![Tier::Village, Tier::Township],
            decided_by: Tier::Township,
            promised_days: limit,
            fields: vec![("applicant".into(), FieldValue::Text("张三".into()))],
            materials: vec![],
        }),
    ))
    .chain(steps.iter().map(|(day, s)| (*day, Body::Step { step: s.clone(), note: String::new() })));
    for (i, (day, body)) in bodies.enumerate() {
        let context = fold_case(&case, &events).map(|s| s.context()).unwrap_or_else(VClock::new);
        let seq = i as u64 + 1;
        let e = Event {
            id: EventId { origin: origin.clone(), seq },
            lane: Lane::Home(origin.clone()),
            pos: seq,
            prev,
            hlc: Hlc { wall_ms: at(day), logical: 0 },
            actor: "王芳".into(),
            case: case.clone(),
            context,
            body,
        };
        prev = e.hash();
        events.push(e);
    }
    events
}

fn timing_on(events: &[Event], today: &str) -> proto::calendar::Timing {
    let st = fold_case(&events[0].case, events).unwrap();
    timing(&st, &calendar(), d(today)).expect("accepted")
}

#[test]
fn a_case_is_not_timed_before_acceptance() {
    let events = case(3, &[("2026-02-12", Step::PrereviewPass)]);
    let st = fold_case(&events[0].case, &events).unwrap();
    assert!(timing(&st, &calendar(), d("2026-03-01")).is_none());
}

#[test]
fn the_due_date_skips_the_spring_festival_and_counts_a_make_up_saturday() {
    // Accepted Friday 02-13; 02-14 is a make-up Saturday; 02-15..23 off.
    let events = case(3, &[("2026-02-13", Step::Accept)]);
    let t = timing_on(&events, "2026-02-14");
    assert_eq!(t.due, Some(d("2026-02-25")));
    assert_eq!((t.used, t.left, t.warning), (1, 2, Warning::None));
    let t = timing_on(&events, "2026-02-24");
    assert_eq!((t.used, t.left, t.warning), (2, 1, Warning::None));
    let t = timing_on(&events, "2026-02-25");
    assert_eq!((t.used, t.left, t.warning), (3, 0, Warning::Yellow), "the limit used up: a yellow card");
    let t = timing_on(&events, "2026-02-26");
    assert_eq!(t.warning, Warning::Red, "past the due date: a red card");
    assert!(!t.provisional);
}

#[test]
fn suspension_and_supplements_stop_the_clock() {
    // Accepted Monday 11-02 with 5 days; suspended Wednesday 11-04 (2 used);
    // resumed Monday 11-09: 3 left, due Thursday 11-12.
    let steps = [("2026-11-02", Step::Accept), ("2026-11-04", Step::Suspend), ("2026-11-09", Step::Resume)];
    let suspended = case(5, &steps[..2]);
    let t = timing_on(&suspended, "2026-11-06");
    assert!(t.stopped && t.due.is_none());
    assert_eq!(t.used, 2, "no day counts while suspended");
    assert_eq!(timing_on(&suspended, "2026-11-20").used, 2);
    let resumed = case(5, &steps);
    let t = timing_on(&resumed, "2026-11-10");
    assert_eq!((t.used, t.due, t.stopped), (3, Some(d("2026-11-12")), false));
    // Waiting for the applicant stops it too.
    let supplement = case(
        5,
        &[
            ("2026-11-02", Step::Accept),
            ("2026-11-03", Step::RequestSupplement),
            ("2026-11-16", Step::Resubmit),
            ("2026-11-16", Step::Accept),
        ],
    );
    let t = timing_on(&supplement, "2026-11-17");
    assert_eq!((t.used, t.due), (2, Some(d("2026-11-20"))));
}

#[test]
fn a_decision_stops_the_clock_and_is_judged_on_time_or_late() {
    let on_time = case(3, &[("2026-11-02", Step::Accept), ("2026-11-05", Step::Approve)]);
    let t = timing_on(&on_time, "2026-12-31");
    assert_eq!((t.finished, t.on_time, t.used, t.warning), (Some(d("2026-11-05")), Some(true), 3, Warning::None));
    let late = case(3, &[("2026-11-02", Step::Accept), ("2026-11-06", Step::Deny)]);
    assert_eq!(timing_on(&late, "2026-12-31").on_time, Some(false));
    // 即办件: due the day it is accepted.
    let same_day = case(0, &[("2026-11-02", Step::Accept), ("2026-11-02", Step::Approve)]);
    assert_eq!(timing_on(&same_day, "2026-11-03").on_time, Some(true));
    let open = case(0, &[("2026-11-02", Step::Accept)]);
    assert_eq!(timing_on(&open, "2026-11-02").warning, Warning::Yellow);
    assert_eq!(timing_on(&open, "2026-11-03").warning, Warning::Red);
}

#[test]
fn a_year_the_county_has_not_published_is_provisional() {
    let events = case(5, &[("2026-12-30", Step::Accept)]);
    let t = timing_on(&events, "2027-01-04");
    assert!(t.provisional, "2027 is not in the calendar yet");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The timing is a function of the event set, not of the order events
    /// arrived in.
    #[test]
    fn timing_ignores_the_order_events_arrive_in(seed in any::<u64>(), limit in 0u32..12) {
        let events = case(limit, &[
            ("2026-02-10", Step::Accept),
            ("2026-02-12", Step::Suspend),
            ("2026-02-25", Step::Resume),
            ("2026-03-03", Step::Approve),
        ]);
        let expected = timing_on(&events, "2026-03-10");
        let mut shuffled = events.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(timing_on(&shuffled, "2026-03-10"), expected);
    }
}

//! The working-day calendar (工作日历) and the time limits of a case
//! (限时办结): pure rules, no clock; "now" is always given.
//!
//! Days are counted in China's time (UTC+8), where every window of the
//! county works. A year's calendar lists its public holidays and its
//! make-up working days (调休上班); every other Saturday and Sunday is a
//! day off and every other weekday a working day. A year the county has not
//! published counts weekends only and is marked provisional.

use crate::fold::CaseState;
use crate::workflow::State;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A date in China, as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Day(pub i32);

/// Milliseconds of China's offset from UTC.
const CHINA_OFFSET_MS: i64 = 8 * 3600 * 1000;

impl Day {
    /// The date in China at `ms` since the epoch.
    pub fn of_ms(ms: u64) -> Day {
        Day(((ms as i64 + CHINA_OFFSET_MS).div_euclid(86_400_000)) as i32)
    }

    /// Midnight of this date in China, as ms since the epoch.
    pub fn start_ms(self) -> i64 {
        i64::from(self.0) * 86_400_000 - CHINA_OFFSET_MS
    }

    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Day> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        let y2 = if m <= 2 { y - 1 } else { y } as i64;
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (i64::from(m) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day((era * 146_097 + doe - 719_468) as i32))
    }

    pub fn ymd(self) -> (i32, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = (yoe + era * 400) as i32 + i32::from(m <= 2);
        (y, m, d)
    }

    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Day> {
        let mut it = s.trim().splitn(3, '-');
        let y = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        let d = it.next()?.parse().ok()?;
        Day::from_ymd(y, m, d)
    }

    /// 0 Monday … 6 Sunday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> u32 {
        (self.0 + 3).rem_euclid(7) as u32
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One year as the county published it (`deploy/calendar.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearFile {
    /// Where it comes from (the notice and its date).
    #[serde(default)]
    pub source: String,
    /// Inclusive ranges of days off: `["2026-02-15", "2026-02-23"]`.
    #[serde(default)]
    pub holidays: Vec<(String, String)>,
    /// Weekend days that are working days (调休上班).
    #[serde(default)]
    pub workdays: Vec<String>,
}

/// The calendar file: a version and the years it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarFile {
    pub version: u32,
    #[serde(default)]
    pub note: String,
    pub years: BTreeMap<i32, YearFile>,
}

/// A calendar file does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("{0:?} is not a date (YYYY-MM-DD)")]
    BadDate(String),
    #[error("{0} is listed under year {1}")]
    WrongYear(String, i32),
    #[error("holiday range {0} to {1} runs backwards")]
    Backwards(String, String),
    #[error("{0} is both a day off and a make-up working day")]
    Both(String),
}

/// A checked calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    pub version: u32,
    off: BTreeSet<Day>,
    on: BTreeSet<Day>,
    years: BTreeSet<i32>,
}

impl Calendar {
    pub fn new(file: &CalendarFile) -> Result<Calendar, CalendarError> {
        let day = |s: &String, year: i32| {
            let d = Day::parse(s).ok_or_else(|| CalendarError::BadDate(s.clone()))?;
            if d.ymd().0 != year {
                return Err(CalendarError::WrongYear(s.clone(), year));
            }
            Ok(d)
        };
        let (mut off, mut on) = (BTreeSet::new(), BTreeSet::new());
        for (&year, y) in &file.years {
            for (a, b) in &y.holidays {
                let (from, to) = (day(a, year)?, day(b, year)?);
                if to < from {
                    return Err(CalendarError::Backwards(a.clone(), b.clone()));
                }
                off.extend((from.0..=to.0).map(Day));
            }
            for w in &y.workdays {
                on.insert(day(w, year)?);
            }
        }
        if let Some(d) = off.intersection(&on).next() {
            return Err(CalendarError::Both(d.to_string()));
        }
        Ok(Calendar { version: file.version, off, on, years: file.years.keys().copied().collect() })
    }

    /// A calendar of weekends only (no year published).
    pub fn weekends_only() -> Calendar {
        Calendar { version: 0, off: BTreeSet::new(), on: BTreeSet::new(), years: BTreeSet::new() }
    }

    pub fn is_working_day(&self, d: Day) -> bool {
        if self.on.contains(&d) {
            return true;
        }
        !self.off.contains(&d) && d.weekday() < 5
    }

    /// The county has not published this day's year: only weekends count.
    pub fn is_provisional(&self, d: Day) -> bool {
        !self.years.contains(&d.ymd().0)
    }

    /// Working days in `(from, to]`: the first day is not counted, the last
    /// is (a period starts the day after the act that starts it).
    pub fn working_days_between(&self, from: Day, to: Day) -> u32 {
        (from.0 + 1..=to.0).filter(|&d| self.is_working_day(Day(d))).count() as u32
    }

    /// The `n`-th working day after `from` (`from` itself when n = 0).
    pub fn add_working_days(&self, from: Day, n: u32) -> Day {
        let mut d = from;
        let mut left = n;
        while left > 0 {
            d = d.next();
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }
}

/// How close a case is to its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Warning {
    None,
    /// 黄牌: 80 % of the limit used.
    Yellow,
    /// 红牌: past the due date.
    Red,
}

/// The share of the limit after which a case gets a yellow card.
pub const YELLOW_PERCENT: u32 = 80;

/// A case's time against its promised limit, computed from its events and a
/// calendar; the same on every replica for the same events, calendar and
/// `today`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timing {
    /// The promised limit in working days (0: 即办, due the day it is accepted).
    pub limit_days: u32,
    pub accepted: Day,
    /// Working days counted so far (clock stopped while suspended or waiting
    /// for the applicant; not after the decision).
    pub used: u32,
    /// Working days left (0 when due today or past).
    pub left: u32,
    /// The due date while the clock runs, or as it stood at the decision;
    /// `None` while the clock is stopped.
    pub due: Option<Day>,
    /// The clock is stopped (挂起 or 补正).
    pub stopped: bool,
    /// Decided (or ended) on this day, if so.
    pub finished: Option<Day>,
    /// Finished within the limit (for finished cases).
    pub on_time: Option<bool>,
    pub warning: Warning,
    /// A day counted falls in a year the county has not published.
    pub provisional: bool,
}

fn clock_runs(s: State) -> bool {
    matches!(s, State::Accepted)
}

fn clock_ends(s: State) -> bool {
    s.is_done()
}

/// What a case's events fix about its time, whatever the day: what a list
/// can filter and sort on (stored beside the case row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Deadlines {
    pub limit_days: u32,
    pub accepted: Day,
    /// The due date while the clock runs, or as it stood at the decision;
    /// `None` while the clock is stopped.
    pub due: Option<Day>,
    /// From this day on (while the clock runs) the case has a yellow card.
    pub yellow_from: Option<Day>,
    /// Decided (or ended) on this day.
    pub finished: Option<Day>,
    /// Finished within the limit (for finished cases).
    pub on_time: Option<bool>,
}

/// The clock's runs of a case: (from day, to day, or `None` while it runs),
/// and the day it finished.
fn runs_of(case: &CaseState) -> (Vec<(Day, Option<Day>)>, Option<Day>) {
    let mut runs: Vec<(Day, Option<Day>)> = Vec::new();
    let mut finished: Option<Day> = None;
    for h in case.history.iter().filter(|h| !h.superseded) {
        let Some(to) = h.to else { continue };
        let day = Day::of_ms(h.hlc.wall_ms);
        let running = matches!(runs.last(), Some((_, None)));
        if clock_runs(to) && !running && finished.is_none() {
            runs.push((day, None));
        } else if !clock_runs(to) && running {
            if let Some(last) = runs.last_mut() {
                last.1 = Some(day);
            }
            if clock_ends(to) {
                finished = Some(day);
            }
        } else if clock_ends(to) && !runs.is_empty() && finished.is_none() {
            finished = Some(day);
        }
    }
    (runs, finished)
}

/// A case's deadlines, or `None` when it was never accepted (受理 starts
/// the clock) or has no known limit.
pub fn deadlines(case: &CaseState, calendar: &Calendar) -> Option<Deadlines> {
    let limit = case.create.as_ref()?.promised_days;
    let (runs, finished) = runs_of(case);
    let first = runs.first()?;
    let last = runs.last()?;
    let counted = |r: &(Day, Option<Day>)| r.1.map_or(0, |end| calendar.working_days_between(r.0, end.max(r.0)));
    let before: u32 = runs[..runs.len() - 1].iter().map(counted).sum();
    let running_or_finished = last.1.is_none() || finished.is_some();
    let (due, yellow_from) = if running_or_finished {
        let yellow_at = (limit * YELLOW_PERCENT).div_ceil(100);
        (
            Some(calendar.add_working_days(last.0, limit.saturating_sub(before))),
            Some(calendar.add_working_days(last.0, yellow_at.saturating_sub(before))),
        )
    } else {
        (None, None)
    };
    let on_time = finished.map(|f| due.is_none_or(|d| f <= d));
    Some(Deadlines { limit_days: limit, accepted: first.0, due, yellow_from, finished, on_time })
}

/// The timing of a case on `today`, or `None` when it was never accepted
/// (受理 starts the clock) or has no known limit.
pub fn timing(case: &CaseState, calendar: &Calendar, today: Day) -> Option<Timing> {
    let dl = deadlines(case, calendar)?;
    let (runs, _) = runs_of(case);
    let end_of = |run: &(Day, Option<Day>)| run.1.unwrap_or(today).max(run.0);
    let used: u32 = runs.iter().map(|r| calendar.working_days_between(r.0, end_of(r))).sum();
    let stopped = dl.finished.is_none() && dl.due.is_none();
    let provisional = runs.iter().any(|r| (r.0 .0..=end_of(r).0).any(|d| calendar.is_provisional(Day(d))))
        || dl.due.is_some_and(|d| calendar.is_provisional(d));
    let warning = warning_on(&dl, used, today);
    Some(Timing {
        limit_days: dl.limit_days,
        accepted: dl.accepted,
        used,
        left: dl.limit_days.saturating_sub(used),
        due: dl.due,
        stopped,
        finished: dl.finished,
        on_time: dl.on_time,
        warning,
        provisional,
    })
}

/// The card a case has on `today` (`used`: working days counted so far).
fn warning_on(dl: &Deadlines, used: u32, today: Day) -> Warning {
    match (dl.finished, dl.due, dl.yellow_from) {
        (Some(_), _, _) => Warning::None,
        (None, Some(due), _) if today > due => Warning::Red,
        (None, None, _) if used > dl.limit_days => Warning::Red,
        (None, Some(_), Some(y)) if today >= y => Warning::Yellow,
        (None, None, _) if dl.limit_days == 0 || used * 100 >= dl.limit_days * YELLOW_PERCENT => Warning::Yellow,
        _ => Warning::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal2026() -> Calendar {
        let file: CalendarFile = serde_json::from_str(include_str!("../../deploy/calendar.json")).unwrap();
        Calendar::new(&file).unwrap()
    }

    fn d(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn dates_convert_both_ways_in_china_time() {
        assert_eq!(d("1970-01-01"), Day(0));
        assert_eq!(d("2026-11-26").to_string(), "2026-11-26");
        // 2026-11-25 16:30 UTC is 2026-11-26 00:30 in China.
        assert_eq!(Day::of_ms(1_795_624_200_000), d("2026-11-26"));
        assert_eq!(Day::of_ms(d("2026-11-26").start_ms() as u64), d("2026-11-26"));
        assert_eq!(d("2026-11-26").weekday(), 3, "a Thursday");
        assert!(Day::parse("2026-02-30").is_none() && Day::parse("2026-13-01").is_none());
        assert_eq!(d("2028-02-29").to_string(), "2028-02-29");
    }

    /// The 2026 State Council schedule, as deploy/calendar.json holds it.
    #[test]
    fn the_2026_holidays_and_make_up_days() {
        let c = cal2026();
        for off in ["2026-01-01", "2026-01-02", "2026-02-16", "2026-02-23", "2026-05-05", "2026-10-07", "2026-06-19"] {
            assert!(!c.is_working_day(d(off)), "{off} is a day off");
        }
        for on in ["2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"] {
            assert!(c.is_working_day(d(on)), "{on} is a make-up working day");
        }
        assert!(c.is_working_day(d("2026-11-26")) && !c.is_working_day(d("2026-11-28")));
        assert!(!c.is_provisional(d("2026-06-01")) && c.is_provisional(d("2027-06-01")));
    }

    #[test]
    fn working_days_skip_the_spring_festival_and_count_make_up_saturdays() {
        let c = cal2026();
        // Accepted Friday 2026-02-13: Sat 02-14 is a make-up working day (1),
        // 02-15..02-23 are off, then 02-24 (2), 02-25 (3).
        assert_eq!(c.add_working_days(d("2026-02-13"), 3), d("2026-02-25"));
        assert_eq!(c.working_days_between(d("2026-02-13"), d("2026-02-25")), 3);
        // National day: accepted 09-30, 5 working days: 10-08, 10-09, 10-10 (Sat, make-up), 10-12, 10-13.
        assert_eq!(c.add_working_days(d("2026-09-30"), 5), d("2026-10-13"));
        // The acceptance day itself does not count; 0 days is the same day.
        assert_eq!(c.add_working_days(d("2026-11-26"), 0), d("2026-11-26"));
        assert_eq!(c.working_days_between(d("2026-11-26"), d("2026-11-26")), 0);
    }

    #[test]
    fn a_bad_calendar_is_refused() {
        let mut file: CalendarFile = serde_json::from_str(include_str!("../../deploy/calendar.json")).unwrap();
        file.years.get_mut(&2026).unwrap().workdays.push("2026-02-16".into());
        assert!(matches!(Calendar::new(&file), Err(CalendarError::Both(_))));
        file.years.get_mut(&2026).unwrap().workdays = vec!["2025-12-31".into()];
        assert!(matches!(Calendar::new(&file), Err(CalendarError::WrongYear(..))));
    }
}

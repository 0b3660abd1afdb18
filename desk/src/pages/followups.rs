//! 回访: follow-ups (整改回访) of poor ratings held here, open ones first,
//! each due 15 working days after the rating.

use super::{node_name, page};
use crate::session::Staff;
use crate::{App, DeskError, Html};
use axum::extract::{Query, State};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub struct Params {
    all: Option<String>,
}

pub async fn show(State(app): State<Arc<App>>, staff: Staff, Query(p): Query<Params>) -> Result<Html, DeskError> {
    let all = p.all.is_some();
    let (rows, topology) = app.read(move |l| Ok((node::cli::followups(l, all)?, l.topology().clone()))).await?;
    let body = html! {
        p.muted { "评价为“不满意”“非常不满意”的办件，由办理该件的窗口在 15 个工作日内整改并回访申请人。"
            @if all { a href="/followups" { "只看未完成的" } } @else { a href="/followups?all=1" { "包括已完成的" } } }
        @if rows.is_empty() { p.empty { "没有需要回访的评价。" } } @else {
            table.cases {
                thead { tr { th { "办件编号" } th { "评价" } th { "评价日期" } th { "回访期限" } th { "负责窗口" } th { "状态" } } }
                tbody { @for r in &rows {
                    tr class=[(r.state == "overdue").then_some("flagged")] {
                        td { a href=(format!("/case/{}", r.case_id)) { (r.case_id) } }
                        td { (crate::text::rating(r.level)) }
                        td { (r.rated) } td { (r.due) }
                        td { (node_name(&topology, &proto::NodeId::new(r.owner.as_str()))) }
                        td { @match r.state {
                            "overdue" => span.badge.red { "已超期" },
                            "closed" => span.badge.ok { "已回访" },
                            _ => span.badge.yellow { "待回访" },
                        } }
                    }
                } }
            }
        }
    };
    Ok(page(&app, &staff, "回访", "回访", body))
}

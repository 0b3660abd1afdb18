//! Every word the desks show, in one place (Chinese first), so an English
//! desk can follow by adding a second table. Data (case ids, names, item
//! names) never passes through here.

use node::staff::Role;
use proto::workflow::State;
use proto::{Step, Tier};

pub const APP: &str = "政务服务办件台";
pub const LOGIN: &str = "登录";
pub const LOGOUT: &str = "退出";
pub const LOGIN_NAME: &str = "账号";
pub const PASSWORD: &str = "密码";
pub const LOGIN_WRONG: &str = "账号或密码不正确。";
pub const LOGIN_DISABLED: &str = "该账号已停用，请联系管理员。";
pub const LOGIN_FORM_EXPIRED: &str = "登录页面已过期，请重新输入。";

pub const NAV_QUEUE: &str = "待办";
pub const NAV_INTAKE: &str = "收件";
pub const NAV_SYNC: &str = "同步";
pub const NAV_LEDGER: &str = "总账";
pub const NAV_DASHBOARD: &str = "看板";
pub const NAV_QUARANTINE: &str = "隔离区";
pub const NAV_NODES: &str = "节点";
pub const NAV_STAFF: &str = "人员";
pub const NAV_ACCESS: &str = "查阅记录";

pub const CASE_ID: &str = "办件编号";
pub const ITEM: &str = "事项";
pub const ITEM_CODE: &str = "事项编码";
pub const APPLICANT: &str = "申请人";
pub const ID_NUMBER: &str = "身份证号";
pub const PHONE: &str = "联系电话";
pub const ADDRESS: &str = "住址";
pub const STATE: &str = "状态";
pub const HOME: &str = "收件点";
pub const HANDLER: &str = "当前办理";
pub const UPDATED: &str = "最近办理";
pub const CREATED: &str = "收件时间";
pub const MATERIALS: &str = "申请材料";
pub const HISTORY: &str = "办理过程";
pub const ACTIONS: &str = "可办操作";
pub const NOTE: &str = "意见/备注";
pub const SEARCH: &str = "查询";
pub const SEARCH_HINT: &str = "办件编号、申请人姓名或身份证号";
pub const NEXT_PAGE: &str = "下一页";
pub const FIRST_PAGE: &str = "第一页";
pub const NONE_FOUND: &str = "没有符合条件的办件。";
pub const FLAGGED: &str = "需人工核对";
pub const ALL: &str = "全部";
pub const NEEDS_ME: &str = "待本窗口办理";
pub const REQUIRED: &str = "必交";
pub const MAY_BE_MISSING: &str = "可容缺";
pub const OPTIONAL: &str = "非必交";
pub const RECEIVED: &str = "已收";
pub const NOT_RECEIVED: &str = "未收";
pub const SAVE_CASE: &str = "保存并出具回执";
pub const PICK_ITEM: &str = "选择事项";
pub const PICK_ITEM_HINT: &str = "输入事项名称或编码筛选";
pub const SAME_DAY: &str = "即办";
pub const RECEIPT: &str = "受理回执";
pub const NOTICE: &str = "一次性告知书";
pub const PRINT: &str = "打印";
pub const SHOW_FULL: &str = "查看完整信息（将被记录）";
pub const CONCURRENT: &str = "同时录入了不同的值";
pub const ADOPT: &str = "采用此值";
pub const SUPERSEDED: &str = "已被并发操作取代";
pub const RATE: &str = "评价";
pub const ADD_MATERIAL: &str = "补收材料";
pub const REMOVE_MATERIAL: &str = "撤除";
pub const SYNC_NOW: &str = "立即同步";
pub const EXPORT_CSV: &str = "导出 CSV";
pub const EXPORT_XLSX: &str = "导出 Excel";
pub const NOT_FOUND: &str = "没有找到该页面或办件（或不在本节点的范围内）。";
pub const FORBIDDEN_CSRF: &str = "表单已失效（缺少或错误的校验码），未做任何修改。请返回重新提交。";
pub const FORBIDDEN_ROLE: &str = "您的角色无权进行此操作。";
pub const INTERNAL: &str = "系统出错，未做任何修改。请稍后重试；若仍出错，请联系管理员。";
pub const WRITTEN: &str = "已保存。";
pub const BAD_FORM: &str = "表单格式不正确，未做任何修改。";

// Material files (材料文件).
pub const UPLOAD: &str = "上传";
pub const REPLACE: &str = "替换";
pub const ADD_FILE: &str = "再传一份";
pub const DETACH: &str = "移除";
pub const DETACH_NOTE: &str = "移除原因";
pub const FILE_NOT_HERE: &str = "尚未同步到本机";
/// A material satisfied by an electronic licence (电子证照), by reference.
pub const LICENCE_CITED: &str = "以电子证照代替";
pub const LICENCE_VALID: &str = "证照核验通过";
pub const LICENCE_INVALID: &str = "证照核验未通过";
/// 县级已接收 marks (the county's signed receipt covers it).
pub const COUNTY_RECEIVED: &str = "县级已接收";
pub const COUNTY_RECEIVED_HINT: &str = "县市民服务中心已签收本件的全部记录";
pub const COUNTY_NOT_YET: &str = "县级尚未确认";
pub const COUNTY_NOT_YET_HINT: &str = "县市民服务中心的签收回执尚未包含本件的全部记录（同步后更新）";
pub const FILE_REPLACED: &str = "已替换";
pub const FILE_REMOVED: &str = "已移除";
pub const NO_FILE_YET: &str = "尚无文件";
pub const CHOOSE_FILE: &str = "选择文件或拍照";
pub const NO_FILE_CHOSEN: &str = "请先选择要上传的文件。未保存任何内容。";
pub const FILE_HINT: &str = "可上传 PDF、JPEG、PNG 或 OFD 文件，每个不超过 20 MB；也可用手机或高拍仪直接拍照。";
pub const CHOOSE_FILES_AGAIN: &str = "浏览器不会保留已选的文件，请重新选择要上传的文件。";
pub const FILES_TOO_LARGE_TOGETHER: &str =
    "本次一起上传的文件合计超过 21 MB，未保存任何内容。请少选几个文件先保存办件，其余文件再到办件页面逐个上传。";
pub const FILE_DAMAGED: &str = "该文件在本机保存的内容已损坏（与登记时的校验值不符），为防误用未予打开。请联系管理员；上级节点若存有该文件，可从那里重新取得。";
pub const FILE_OPENED_NOTE: &str = "打开材料文件（含缩略图）会记入查阅记录。";
pub const ACCESS_LOG_NOTE: &str =
    "每次查看完整的身份证号、电话或住址，每次打开材料文件（含缩略图），都记录在此（最近 1000 条）。";
pub const FILE_REPLACES_EARLIER: &str = "（补正，替换先前的文件）";
pub const FILE_NOT_SAVED: &str = "的文件未保存，原因见该材料下方。";
pub const FILE_SAVED_BUT: &str = "办件已保存，但以下文件未能保存，请在本页重新上传：";

/// A material file's type, as staff say it.
pub fn media_type(m: proto::files::MediaType) -> &'static str {
    use proto::files::MediaType;
    match m {
        MediaType::Pdf => "PDF 文件",
        MediaType::Jpeg => "JPEG 图片",
        MediaType::Png => "PNG 图片",
        MediaType::Ofd => "OFD 电子文件",
    }
}

/// A file size: KB below a megabyte, MB with one decimal above.
pub fn file_size(bytes: u64) -> String {
    if bytes < 1_048_576 {
        format!("{} KB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MB", bytes as f64 / 1_048_576.0)
    }
}

/// Pages of a file, when known.
pub fn pages(n: u32) -> String {
    format!("{n} 页")
}

/// What the access log keeps for an opening of a material file, and how
/// the access page says it (see [`access_what`]).
pub fn file_access_key(name: &str, thumbnail: bool) -> String {
    format!("{}:{name}", if thumbnail { "file_thumbnail" } else { "file" })
}

/// A line of the access log's "what", in words.
pub fn access_what(what: &str) -> String {
    if let Some(name) = what.strip_prefix("file:") {
        format!("文件 {name}")
    } else if let Some(name) = what.strip_prefix("file_thumbnail:") {
        format!("文件 {name}（缩略图）")
    } else {
        field(what)
    }
}

/// A case state as staff say it.
pub fn state(s: State) -> &'static str {
    match s {
        State::Received => "已收件",
        State::PreReviewed => "初审通过",
        State::SupplementRequested => "待补正",
        State::Forwarded => "已转报",
        State::Accepted => "已受理",
        State::Suspended => "已挂起",
        State::Approved => "准予",
        State::Denied => "不予许可",
        State::Issued => "已出证",
        State::Closed => "已办结",
        State::Withdrawn => "已撤回",
        State::NotAccepted => "不予受理",
        State::Terminated => "已终止",
    }
}

/// A step as its button says it.
pub fn step(s: &Step) -> &'static str {
    match s {
        Step::PrereviewPass => "预审通过",
        Step::PrereviewReturn => "退回补正",
        Step::Forward { .. } => "转报",
        Step::Accept => "受理",
        Step::Refuse => "不予受理",
        Step::RequestSupplement => "一次性告知补正",
        Step::Resubmit => "补正后重新收件",
        Step::Approve => "准予",
        Step::Deny => "不予许可",
        Step::Issue => "出证",
        Step::Close => "办结",
        Step::Withdraw => "撤回",
        Step::Suspend => "挂起",
        Step::Resume => "恢复",
        Step::AcceptMissing { .. } => "容缺受理",
        Step::Terminate => "终止",
    }
}

/// What a history line's kind means.
pub fn history_kind(kind: &str) -> &'static str {
    match kind {
        "create" => "收件",
        "set_field" => "修改信息",
        "add_material" => "收取材料",
        "remove_material" => "撤除材料",
        "rate" => "评价",
        "prereview_pass" => "预审通过",
        "prereview_return" => "退回补正",
        "forward" => "转报",
        "accept" => "受理",
        "refuse" => "不予受理",
        "request_supplement" => "告知补正",
        "resubmit" => "重新收件",
        "approve" => "准予",
        "deny" => "不予许可",
        "issue" => "出证",
        "close" => "办结",
        "withdraw" => "撤回",
        "suspend" => "挂起",
        "resume" => "恢复",
        "accept_missing" => "容缺受理",
        "terminate" => "终止",
        "attach_file" => "上传文件",
        "detach_file" => "移除文件",
        _ => "其他",
    }
}

pub fn role(r: Role) -> &'static str {
    match r {
        Role::Clerk => "窗口人员",
        Role::Reviewer => "审核人员",
        Role::Admin => "管理员",
    }
}

pub fn tier(t: Tier) -> &'static str {
    match t {
        Tier::Village => "村便民服务室",
        Tier::Township => "乡镇便民服务中心",
        Tier::County => "县政务服务中心",
    }
}

/// A field name as a label.
pub fn field(name: &str) -> String {
    match name {
        "applicant" => APPLICANT.into(),
        "id_number" => ID_NUMBER.into(),
        "phone" => PHONE.into(),
        "address" => ADDRESS.into(),
        "missing_commitment" => "容缺承诺".into(),
        "id_number_search" => "按身份证号查询到此件".into(),
        "bundle" => "一件事受理编号".into(),
        "agent" => "代办员".into(),
        "agent_authorisation" => "申请人委托".into(),
        other => other.into(),
    }
}

/// Ratings of 好差评: 1 is best, 5 worst (the national 好差评 levels).
pub fn rating(level: u8) -> &'static str {
    match level {
        1 => "非常满意",
        2 => "满意",
        3 => "基本满意",
        4 => "不满意",
        5 => "非常不满意",
        _ => "未评价",
    }
}

/// A quarantine kind, in words.
pub fn quarantine_kind(kind: &str) -> &'static str {
    match kind {
        "malformed" => "格式错误",
        "out_of_scope" => "超出本节点范围",
        "key_not_enrolled" => "签名密钥未经县中心登记",
        "key_revoked" => "签名密钥已被吊销",
        "bad_seal" => "签名无效",
        "broken_chain" => "记录链断裂或被篡改",
        "not_authorised" => "无权办理该事项",
        "second_copy" => "发现同一节点的另一份副本",
        "new_incarnation" => "节点恢复后启用新副本",
        _ => "其他原因",
    }
}

/// Why a local command was declined, in words, and the form field it is
/// about (to show the message beside it).
pub fn declined(e: &node::Error) -> (Option<&'static str>, String) {
    use node::Declined;
    use proto::author::AuthoringError;
    use proto::limits::LimitError;
    use proto::personal::IdNumberError;
    let Some(d) = e.declined() else {
        return (None, INTERNAL.to_string());
    };
    match d {
        Declined::UnknownItem(code) => (Some("item"), format!("事项编码 {code} 不在本节点的事项目录中。")),
        Declined::ItemCancelled { item, version } => {
            (Some("item"), format!("事项 {item} 已在县里发布的第 {version} 版事项目录中取消，不能再受理。"))
        }
        Declined::IdNumber(e) => (
            Some("id_number"),
            match e {
                IdNumberError::Length(n) => format!("身份证号应为18位（现为{n}位）。"),
                IdNumberError::Character => "身份证号只能是数字，最后一位可以是X。".into(),
                IdNumberError::BirthDate(d) => format!("身份证号第7–14位应为出生日期，{d} 不是有效日期。"),
                IdNumberError::CheckDigit { expected, got } => {
                    format!("身份证号校验位不正确（应为 {expected}，输入的是 {got}），请与申请人核对。")
                }
            },
        ),
        Declined::Authoring(AuthoringError::NoSuchCase(_)) => (None, NOT_FOUND.into()),
        Declined::Authoring(AuthoringError::Transition { .. }) => {
            (None, "办件当前状态不允许此操作（可能已被其他窗口办理），请刷新后查看。".into())
        }
        Declined::Authoring(AuthoringError::Auth(proto::auth::AuthError::NotMayBeMissing { material, .. })) => {
            (None, format!("“{material}”不允许容缺，受理时必须收取。未做任何修改。"))
        }
        Declined::Authoring(AuthoringError::Auth(a)) => (None, format!("本节点无权进行此操作：{a}")),
        Declined::Invalid(msg) if msg.contains("applicant") => (Some("applicant"), "申请人姓名不能为空。".into()),
        Declined::Invalid(msg) if msg.contains("phone number") => {
            (Some("phone"), "联系电话只能包含数字、“-”或“+”，至少7位。".into())
        }
        Declined::Invalid(msg) if msg.contains("promised date") && msg.contains("past") => {
            (None, "承诺补交日期已过，请填写今天或以后的日期。未做任何修改。".into())
        }
        Declined::Invalid(msg) if msg.contains("at least one missing") => (None, "请勾选至少一项容缺的材料。".into()),
        Declined::Invalid(msg) if msg.contains("has not reached") => (None, "办件尚未到达该环节，暂不能评价。".into()),
        Declined::Invalid(msg) if msg.contains("one rating per stage") => {
            (None, "该环节已评价过（一事一评，每个环节评价一次）。".into())
        }
        Declined::Invalid(msg) if msg.contains("no open follow-up") => (None, "该办件没有待回访的评价。".into()),
        Declined::Invalid(msg) if msg.contains("--response") => (None, "请填写整改情况。".into()),
        Declined::Invalid(msg) if msg.contains("already received") => {
            (None, "所选材料已收取，不属于缺少的材料。".into())
        }
        Declined::Invalid(msg) if msg.contains("is required and has not been received") => {
            (None, format!("必交材料尚未收取，且不允许容缺：{}", msg.split(' ').next().unwrap_or_default()))
        }
        Declined::Invalid(msg) if msg.contains("only that node can sign its licence") => {
            (None, "该办件的结果由其他节点出证，电子证照只能由出证节点签发。".into())
        }
        Declined::Invalid(msg) if msg.contains("has no result issued") => (None, "该办件尚未出证。".into()),
        Declined::Invalid(msg) if msg.contains("--authorisation") => {
            (Some("agent"), "代办员代为申请，须填写申请人的委托情况。".into())
        }
        Declined::Invalid(msg) if msg.contains("to replace") => (
            Some("file"),
            "要替换的文件已不是该材料的当前文件（可能已被其他窗口替换或移除），请刷新页面后再传。未保存任何内容。"
                .into(),
        ),
        Declined::Invalid(msg) if msg.contains("to take off") => {
            (None, "该文件已被移除，或不属于该材料，请刷新页面后查看。".into())
        }
        Declined::Invalid(msg) if msg.contains("has no file") => (None, "该办件没有这个文件。".into()),
        Declined::Invalid(msg) => (None, format!("输入有误：{msg}")),
        Declined::FileType => (
            Some("file"),
            "只能上传 PDF、JPEG、PNG 或 OFD 文件（按文件内容判断，与文件名无关）。未保存任何内容。".into(),
        ),
        Declined::FileTooLarge { size, limit } => (
            Some("file"),
            format!(
                "文件大小 {:.1} MB，超过每个文件 {} MB 的上限。请降低扫描分辨率或分开上传。未保存任何内容。",
                *size as f64 / 1_048_576.0,
                limit / 1_048_576
            ),
        ),
        Declined::Licence(e) => (None, format!("电子证照核验未通过：{e}。未做任何修改。")),
        Declined::FileNotHere(_) => (None, "本机尚未收到该文件，下次同步后即可查看。".into()),
        Declined::Recovering => (
            None,
            "本机记录旧于网络上的副本（可能从备份恢复或复制而来）。已办事项均已保留，请先同步完成恢复，再办理新业务。"
                .into(),
        ),
        Declined::Limit(LimitError::FileTooLarge { size, max }) => (
            Some("file"),
            format!(
                "文件大小 {:.1} MB，超过每个文件 {} MB 的上限。请降低扫描分辨率或分开上传。未保存任何内容。",
                *size as f64 / 1_048_576.0,
                max / 1_048_576
            ),
        ),
        Declined::Limit(LimitError::CaseFilesTooLarge { size, max }) => (
            Some("file"),
            format!(
                "上传后该办件的文件合计 {:.1} MB，超过每件 {} MB 的上限。请降低扫描分辨率后再传。未保存任何内容。",
                *size as f64 / 1_048_576.0,
                max / 1_048_576
            ),
        ),
        Declined::Limit(LimitError::TooLong { what, max, .. }) if what == "a file name" => {
            (Some("file"), format!("文件名过长（最多 {max} 个字），请改短文件名后再传。未保存任何内容。"))
        }
        Declined::Limit(LimitError::Control { what, .. }) if what == "a file name" => {
            (Some("file"), "文件名含有不可见的控制字符，请重命名后再传。未保存任何内容。".into())
        }
        Declined::Limit(l) => (None, format!("输入超出限制：{l}")),
    }
}

/// A running sync session's phase, in words.
pub fn sync_phase(phase: node::sync::Phase) -> &'static str {
    use node::sync::Phase;
    match phase {
        Phase::Connecting => "正在连接上级节点",
        Phase::Events => "正在交换案件记录",
        Phase::Files => "案件记录已全部同步，正在传输材料文件",
    }
}

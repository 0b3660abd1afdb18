#!/usr/bin/env python3
"""Writes the default topology and catalogue shipped in deploy/.

Both are editable examples for Renshou county (仁寿县, 511421), not official
rosters. Run from anywhere: python3 deploy/generate_defaults.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
COUNTY = "511421"

# 32 township-level units (2023 division list). 视高, 贵平 and 高家 are
# administered by the Tianfu New Area; 虞丞 and 青岗 are left out to reach the
# 27 centres the county's report names. Edit freely.
STREETS = ["文林", "普宁", "怀仁"]
TOWNS = ["文宫", "禾加", "龙马", "方家", "大化", "禄加", "宝飞", "彰加", "慈航", "汪洋", "钟祥",
         "始建", "满井", "富加", "龙正", "黑龙滩", "北斗", "宝马", "珠嘉", "曹家", "谢安", "新店",
         "藕塘", "板桥"]
NUM = "一二三四五六七八九十"


def cn(n):
    if n <= 10:
        return NUM[n - 1]
    return "十" + NUM[n - 11]


def topology():
    units = [(n + "街道", "社区") for n in STREETS] + [(n + "镇", "村") for n in TOWNS]
    assert len(units) == 27
    nodes = [{"id": COUNTY, "tier": "county", "parent": None, "name": "仁寿县市民服务中心"}]
    # 293 villages: 23 townships with 11, 4 with 10.
    for i, (name, kind) in enumerate(units):
        tid = f"{COUNTY}{i + 101:03d}"
        nodes.append({"id": tid, "tier": "township", "parent": COUNTY, "name": f"{name}便民服务中心"})
        for v in range(1, (10 if i >= 23 else 11) + 1):
            short = name.replace("街道", "").replace("镇", "")
            nodes.append({"id": f"{tid}{v:03d}", "tier": "village", "parent": tid,
                          "name": f"{short}{cn(v)}{kind}便民服务室"})
    assert sum(1 for n in nodes if n["tier"] == "village") == 293
    return {
        "note": "Editable example built from the 2023 division names of Renshou county; "
                "not an official roster. Node ids follow division codes (6/9/12 digits).",
        "nodes": nodes,
    }


ID = ("居民身份证", True, False)
FORM = ("申请表", True, False)
HUKOU = ("户口簿", True, True)
PHOTO = ("近期免冠照片", False, True)

# (name, decided_by, item_type, extra materials)
VILLAGE = [
    ("城乡居民基本医疗保险参保登记", "township", "20", [HUKOU]),
    ("城乡居民基本养老保险参保登记", "township", "20", [HUKOU]),
    ("城乡居民基本养老保险待遇领取", "township", "05", [HUKOU, ("银行卡", True, True)]),
    ("残疾人证申领", "county", "07", [PHOTO, ("医院诊断证明", True, False)]),
    ("老年人优待证办理", "township", "20", [PHOTO]),
    ("党员组织关系转接", "village", "20", [("党员组织关系介绍信", True, False)]),
    ("临时救助申请", "township", "05", [("家庭经济状况说明", True, True)]),
    ("最低生活保障申请", "county", "05", [HUKOU, ("家庭收入证明", True, True)]),
    ("特困人员救助供养申请", "county", "05", [HUKOU]),
    ("高龄津贴申领", "township", "05", [HUKOU]),
    ("残疾人两项补贴申请", "county", "05", [("残疾人证", True, False)]),
    ("医疗救助申请", "county", "05", [("医疗费用票据", True, False)]),
    ("独生子女父母奖励扶助申请", "county", "05", [("独生子女父母光荣证", True, False)]),
    ("计划生育家庭特别扶助申请", "county", "05", [HUKOU]),
    ("生育登记服务", "township", "20", [("结婚证", True, False)]),
    ("农村宅基地申请", "township", "01", [HUKOU, ("宅基地使用承诺书", True, True)]),
    ("农村危房改造申请", "county", "05", [("房屋照片", True, True)]),
    ("耕地地力保护补贴申报", "township", "05", [("土地承包经营权证", True, False)]),
    ("退役军人优待证申领", "county", "20", [("退役证件", True, False), PHOTO]),
    ("农村土地承包经营权流转备案", "township", "20", [("流转合同", True, False)]),
    ("殡葬补助申领", "township", "05", [("死亡证明", True, False)]),
    ("居住证明开具", "village", "20", []),
    ("家庭经济困难证明开具", "village", "20", [HUKOU]),
    ("村民身份关系证明开具", "village", "20", [HUKOU]),
    ("农村五保供养证明", "village", "20", []),
    ("务工证明开具", "village", "20", []),
    ("农业经营主体信息登记", "village", "20", []),
    ("农村饮水安全问题反映登记", "village", "20", []),
    ("孕产妇住院分娩补助申请", "township", "05", [("出院证明", True, False)]),
    ("困难群众冬春生活救助申请", "township", "05", []),
    # Items of the 一件事 bundles below.
    ("出生医学证明办理", "county", "07", [("住院分娩记录", True, False)]),
    ("出生户口登记", "township", "07", [HUKOU, ("出生医学证明", True, True)]),
    ("社会保障卡申领", "township", "20", [PHOTO]),
    ("死亡户口注销", "township", "07", [HUKOU, ("死亡证明", True, False)]),
    ("城乡居民养老保险丧葬补助金申领", "township", "05", [("死亡证明", True, False)]),
]

TOWNSHIP = [
    ("就业失业登记", "township", "20", []),
    ("灵活就业人员社会保险登记", "township", "20", []),
    ("退役军人信息采集", "township", "20", [("退役证件", True, False)]),
    ("流动人口婚育证明办理", "township", "20", [HUKOU]),
    ("农机购置补贴申请", "county", "05", [("购机发票", True, False)]),
    ("建设项目环境影响登记表备案", "county", "20", [("登记表", True, False)]),
    ("户外广告设置审批", "township", "01", [("设置方案", True, False)]),
    ("乡村建设规划许可证核发", "township", "01", [("规划图", True, False)]),
    ("城乡居民医疗保险异地就医备案", "township", "20", []),
    ("被征地农民社会保障申请", "county", "05", [HUKOU]),
]

COUNTY_ITEMS = [
    ("食品经营许可", "01", [("营业执照", True, False), ("食品安全管理制度", True, True)]),
    ("个体工商户设立登记", "01", [("经营场所证明", True, True)]),
    ("药品零售企业许可", "01", [("营业执照", True, False)]),
    ("道路货物运输经营许可", "01", [("车辆行驶证", True, False)]),
    ("建设工程规划许可证核发", "01", [("建设工程设计方案", True, False)]),
    ("公共场所卫生许可", "01", [("卫生检测报告", True, True)]),
    ("户口迁移审批", "07", [HUKOU]),
    ("不动产登记", "07", [("权属来源证明", True, False)]),
    ("烟草专卖零售许可", "01", [("经营场所证明", True, False)]),
    ("民办学校办学许可", "01", [("章程", True, False)]),
]


def materials(extra):
    out = []
    for name, required, may_be_missing in [ID, FORM] + list(extra):
        out.append({"name": name, "required": required, "may_be_missing": may_be_missing})
    return out


def item(code, name, item_type, accepted_at, decided_by, extra, case_kind, n):
    promised = 0 if case_kind == 1 else 3 + n % 8
    return {
        "code": code, "name": name, "item_type": item_type, "accepted_at": accepted_at,
        "decided_by": decided_by, "case_kind": case_kind, "materials": materials(extra),
        "legal_limit_days": 0 if case_kind == 1 else 20, "promised_limit_days": promised,
        "result": "办理结果通知书" if item_type != "01" else "许可证",
    }


def catalogue():
    items = []
    # 106 items taken at village rooms (and township centres).
    for n in range(106):
        if n < len(VILLAGE):
            name, decided, typ, extra = VILLAGE[n]
        else:
            decided = ["village", "township", "township", "county"][n % 4]
            name, typ, extra = f"村级代办事项（示例）{n + 1:03d}", "20", [HUKOU] if n % 3 else []
        kind = 1 if decided == "village" else 2
        # 村直审 items are decided by the village itself, so only villages take them.
        accepted = ["village"] if decided == "village" else ["village", "township"]
        items.append(item(f"V{n + 1:03d}", name, typ, accepted, decided, extra, kind, n))
    # Township-only items, so that 216 in all are taken at township centres.
    at_township = sum(1 for i in items if "township" in i["accepted_at"])
    for n in range(216 - at_township):
        if n < len(TOWNSHIP):
            name, decided, typ, extra = TOWNSHIP[n]
        else:
            decided = "township" if n % 3 else "county"
            name, typ, extra = f"乡镇便民服务事项（示例）{n + 1:03d}", "20", []
        items.append(item(f"T{n + 1:03d}", name, typ, ["township"], decided, extra, 2, n))
    # 1371 at the county centre, 798 of them decided on the spot.
    for n in range(1371):
        if n < len(COUNTY_ITEMS):
            name, typ, extra = COUNTY_ITEMS[n]
        else:
            name, typ, extra = f"县级政务服务事项（示例）{n + 1:04d}", ["01", "05", "07", "10", "20"][n % 5], []
        kind = 1 if n >= 1371 - 798 else 2
        items.append(item(f"C{n + 1:04d}", name, typ, ["county"], "county", extra, kind, n))
    by_name = {i["name"]: i["code"] for i in items}
    bundles = [
        ("B01", "新生儿出生一件事", ["出生医学证明办理", "出生户口登记", "城乡居民基本医疗保险参保登记", "社会保障卡申领"]),
        ("B02", "身后一件事", ["死亡户口注销", "殡葬补助申领", "城乡居民养老保险丧葬补助金申领"]),
        ("B03", "退休养老一件事", ["城乡居民基本养老保险待遇领取", "老年人优待证办理", "高龄津贴申领"]),
        ("B04", "残疾人服务一件事", ["残疾人证申领", "残疾人两项补贴申请", "医疗救助申请"]),
        ("B05", "家庭农场开办一件事", ["农业经营主体信息登记", "农村土地承包经营权流转备案", "耕地地力保护补贴申报"]),
    ]
    return {
        "version": 1,
        "note": "Editable example catalogue: common items carry real names, the long tail is generated "
                "and marked （示例）. Codes are local example codes, not national implementation codes. "
                "Bundles (一件事一次办) group items taken once at one window and decided in parallel.",
        "items": items,
        "bundles": [{"code": c, "name": n, "items": [by_name[x] for x in names]} for c, n, names in bundles],
    }


def write(name, data):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    write("topology.json", topology())
    write("catalogue.json", catalogue())

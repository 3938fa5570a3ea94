"""The sandbox HIS's data: three hospitals, their departments and doctors, clinic sessions per day, and the
records the simulator keeps of what is made through its API (appointments, patients, outpatient bills).

Everything is drawn from generators the simulator seeds: the directory (doctors' names, titles, specialties,
weekly patterns, who is on leave) from ``ctx.random``, each day's sessions from a generator seeded with a base
drawn from it plus the hospital and the date, so that days generated later as the shared clock moves on are
as reproducible as the first ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from domain.catalogue.model import DoctorTitle, HospitalLevel, Period
from domain.kernel.clock import SHANGHAI

SLOT_MINUTES = 30
"""APT-001: numbers are released in slots of at most 30 minutes."""

PERIOD_HOURS: dict[Period, tuple[time, time]] = {
    Period.MORNING: (time(8, 0), time(12, 0)),
    Period.AFTERNOON: (time(14, 0), time(17, 30)),
}

TITLE_NAMES: dict[DoctorTitle, str] = {
    DoctorTitle.CHIEF: "主任医师",
    DoctorTitle.ASSOCIATE_CHIEF: "副主任医师",
    DoctorTitle.ATTENDING: "主治医师",
    DoctorTitle.RESIDENT: "住院医师",
}

FEES: dict[DoctorTitle | None, float] = {
    None: 10.0,  # 普通门诊 (a department's general clinic)
    DoctorTitle.RESIDENT: 10.0,
    DoctorTitle.ATTENDING: 20.0,
    DoctorTitle.ASSOCIATE_CHIEF: 30.0,
    DoctorTitle.CHIEF: 50.0,
}
"""Registration fees in yuan by title."""

_TITLE_ORDER = (DoctorTitle.CHIEF, DoctorTitle.ASSOCIATE_CHIEF, DoctorTitle.ATTENDING, DoctorTitle.RESIDENT)

_TITLE_WEIGHTS: dict[HospitalLevel, tuple[int, int, int, int]] = {
    HospitalLevel.TERTIARY: (2, 3, 5, 3),
    HospitalLevel.SECONDARY: (1, 2, 5, 4),
    HospitalLevel.PRIMARY: (0, 1, 5, 4),
}
"""Relative weights of chief, associate chief, attending, resident: fewer seniors."""

_YEARS: dict[DoctorTitle, tuple[int, int]] = {
    DoctorTitle.CHIEF: (22, 35),
    DoctorTitle.ASSOCIATE_CHIEF: (14, 24),
    DoctorTitle.ATTENDING: (7, 14),
    DoctorTitle.RESIDENT: (2, 6),
}

_SURNAMES = (
    "王王王李李李张张张刘刘陈陈杨杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_GIVEN_MALE = "建国伟强军磊涛斌明勇杰峰鹏华志文俊浩宇晨波辉刚平东海林亮宏超永德云飞鑫正光荣"
_GIVEN_FEMALE = "芳娟敏静丽艳燕霞玲婷雪梅琳慧颖洁红萍兰倩璐佳欣悦晓月春秀英娜丹蕾薇晶莉"

_STOP_REASONS = ("医生临时外出会诊", "医生参加学术会议", "医院临时安排手术", "医生身体不适")
LEAVE_REASON = "医生休假"

_STOPPED_SHARE = 0.04
_FULL_SHARE = 0.10
_ABSENT, _STOPPED = "absent", "stopped"


@dataclass(frozen=True, slots=True)
class _DeptSpec:
    code: str
    name: str
    doctors: int
    parent: str | None = None
    general_days: tuple[int, ...] = ()
    """Weekdays (0 = Monday) with a general clinic (普通门诊, no named doctor) in the morning."""
    general_afternoon_days: tuple[int, ...] = ()
    topic: str = ""
    """The department's specialties pool and description are looked up by this name (default: the name)."""


@dataclass(frozen=True, slots=True)
class HospitalInfo:
    code: str
    name: str
    level: HospitalLevel
    grade: str
    """e.g. 三级甲等."""
    kind: str
    """e.g. 综合医院."""
    district: str
    address: str
    phone: str
    onsite_share: float
    """The share of each slot's numbers held back for on-site registration (现场号)."""
    saturday_share: float
    """The share of doctors who also see patients on Saturday mornings."""


@dataclass(frozen=True, slots=True)
class DepartmentRec:
    code: str
    name: str
    parent: str | None
    description: str
    general_days: tuple[int, ...]
    general_afternoon_days: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DoctorRec:
    code: str
    family: str
    given: str
    gender: str
    """male | female (FHIR AdministrativeGender)."""
    title: DoctorTitle
    department_code: str
    specialties: tuple[str, ...]
    introduction: str
    pattern: tuple[tuple[int, Period], ...]
    """Weekly half-days (weekday, period) the doctor sees patients."""
    on_leave: bool = False
    leave_mode: str = _ABSENT
    """absent: no sessions while on leave; stopped: sessions kept, stopped with 医生休假."""

    @property
    def name(self) -> str:
        return self.family + self.given


@dataclass(frozen=True, slots=True)
class Directory:
    hospital: HospitalInfo
    departments: tuple[DepartmentRec, ...]
    doctors: tuple[DoctorRec, ...]

    def department(self, code: str) -> DepartmentRec | None:
        return next((d for d in self.departments if d.code == code), None)

    def doctor(self, code: str) -> DoctorRec | None:
        return next((d for d in self.doctors if d.code == code), None)


@dataclass(eq=False, slots=True)
class SlotRec:
    id: str
    session_id: str
    index: int
    start: datetime
    end: datetime
    onsite: int
    """Numbers held back for on-site registration (never the platform's)."""
    capacity: int
    """Numbers released to the platform pool."""
    external: int
    """Platform numbers the HIS already counted taken when the data was seeded (no appointment of ours)."""
    first_number: int
    """The queue number of the slot's first number (on-site numbers come first)."""
    held: int = 0
    """Numbers taken by appointments made here (locks, registrations, check-ins)."""
    used: set[int] = field(default_factory=set)
    """Offsets (from the first platform number) of queue numbers given out."""
    version: int = 1
    last_updated: datetime | None = None

    @property
    def booked(self) -> int:
        return self.external + self.held

    @property
    def total(self) -> int:
        return self.onsite + self.capacity


@dataclass(eq=False, slots=True)
class SessionRec:
    id: str
    department_code: str
    doctor_code: str | None
    title: DoctorTitle | None
    day: date
    period: Period
    start: datetime
    end: datetime
    fee: float
    """Yuan."""
    slots: list[SlotRec]
    last_updated: datetime
    active: bool = True
    stop_reason: str | None = None
    version: int = 1


@dataclass(eq=False, slots=True)
class AppointmentRec:
    """A lock (``proposed``) or a registration (``booked`` and after) made through the FHIR API."""

    id: str
    status: str
    slot_id: str
    session_id: str
    patid: str
    key: str | None
    created: datetime
    last_updated: datetime
    lock_expires: datetime | None = None
    offset: int | None = None
    """The platform number given out (an offset from the slot's first platform number)."""
    queue_number: int | None = None
    holds: bool = True
    """Counted in its slot's ``held``."""
    expired: bool = False
    cancel_reason: str | None = None
    version: int = 1


@dataclass(eq=False, slots=True)
class PatientRec:
    patid: str
    resource: dict[str, object]
    identifiers: list[tuple[str, str]]
    guardians: list[tuple[str, str]]
    name: str
    birth_date: str | None


@dataclass(frozen=True, slots=True)
class BillItemRec:
    code: str
    name: str
    category_code: str
    category: str
    quantity: int
    unit_price_fen: int

    @property
    def amount_fen(self) -> int:
        return self.quantity * self.unit_price_fen


@dataclass(eq=False, slots=True)
class BillRec:
    """An outpatient bill (门诊缴费单): ``issued`` until settled (``balanced``) or withdrawn (``cancelled``)."""

    id: str
    patid: str
    department_code: str
    doctor_code: str | None
    issued_at: datetime
    items: list[BillItemRec]
    last_updated: datetime
    status: str = "issued"
    key: str | None = None
    """The request key of the settlement."""
    receipt_no: str | None = None
    settled_at: datetime | None = None
    payment_ref: str | None = None
    channel: str | None = None
    cancel_reason: str | None = None
    version: int = 1

    @property
    def total_fen(self) -> int:
        return sum(item.amount_fen for item in self.items)

    @property
    def title(self) -> str:
        first = self.items[0].category
        return f"门诊缴费：{first}" + (f" 等{len(self.items)}项" if len(self.items) > 1 else "")


FEE_CATEGORIES: dict[str, str] = {
    "lab": "检验费",
    "exam": "检查费",
    "western": "西药费",
    "patent": "中成药费",
    "treatment": "治疗费",
    "material": "材料费",
}
"""Outpatient fee categories (门诊收费项目分类), code -> the name shown."""

CHARGE_ITEMS: dict[str, tuple[str, str, int]] = {
    "250102001": ("血常规", "lab", 2000),
    "250104002": ("尿常规", "lab", 1000),
    "250301001": ("肝功能", "lab", 6000),
    "250302002": ("空腹血糖", "lab", 800),
    "250403015": ("C反应蛋白", "lab", 3000),
    "210102003": ("胸部正位X线摄影", "exam", 7000),
    "310701001": ("常规心电图", "exam", 2500),
    "220201001": ("腹部彩色多普勒超声", "exam", 15000),
    "XY0001": ("阿莫西林胶囊 0.25g×24粒", "western", 1580),
    "XY0002": ("布洛芬缓释胶囊 0.3g×20粒", "western", 2350),
    "XY0003": ("奥美拉唑肠溶胶囊 20mg×14粒", "western", 3299),
    "ZC0001": ("连花清瘟胶囊 0.35g×24粒", "patent", 2890),
    "120400006": ("静脉输液", "treatment", 1200),
    "311201016": ("雾化吸入", "treatment", 1500),
    "CL0001": ("一次性使用输液器", "material", 350),
}
"""The sandbox's charge items (收费项目): code -> (name, fee category code, unit price in fen)."""

_BILL_KINDS: tuple[tuple[tuple[str, ...], tuple[int, int], tuple[int, int]], ...] = (
    (("250102001", "250104002", "250301001", "250302002", "250403015"), (2, 3), (1, 1)),
    (("210102003", "310701001", "220201001"), (1, 1), (1, 1)),
    (("XY0001", "XY0002", "XY0003", "ZC0001"), (1, 3), (1, 3)),
    (("120400006", "311201016", "CL0001"), (2, 3), (1, 2)),
)
"""Kinds of bill: (charge items to draw from, how many items, the quantity of each)."""


def bill_item(code: str, quantity: int = 1, *, unit_price_fen: int | None = None) -> BillItemRec:
    """A line of a known charge item (its catalogue price unless another one is given)."""
    name, category, price = CHARGE_ITEMS[code]
    return BillItemRec(
        code=code,
        name=name,
        category_code=category,
        category=FEE_CATEGORIES[category],
        quantity=quantity,
        unit_price_fen=price if unit_price_fen is None else unit_price_fen,
    )


def generate_bills(
    directory: Directory, patid: str, *, rng: random.Random, now: datetime, ids: Callable[[], str]
) -> list[BillRec]:
    """One or two unpaid bills of a patient, ordered by doctors seen earlier today (for the demo)."""
    doctors = [d for d in directory.doctors if not d.on_leave]
    bills: list[BillRec] = []
    for n in range(rng.randint(1, 2)):
        codes, count, quantity = rng.choice(_BILL_KINDS)
        chosen = rng.sample(codes, min(rng.randint(*count), len(codes)))
        doctor = rng.choice(doctors)
        issued = now - timedelta(minutes=rng.randint(20, 180) + 60 * n)
        bills.append(
            BillRec(
                id=ids(),
                patid=patid,
                department_code=doctor.department_code,
                doctor_code=doctor.code,
                issued_at=issued.replace(microsecond=0),
                items=[bill_item(code, rng.randint(*quantity)) for code in chosen],
                last_updated=now,
            )
        )
    return sorted(bills, key=lambda b: (b.issued_at, b.id))


# --- the hospitals -----------------------------------------------------------------------------------------

_ALL_WEEK = (0, 1, 2, 3, 4, 5, 6)
_MON_SAT = (0, 1, 2, 3, 4, 5)
_WEEKDAYS = (0, 1, 2, 3, 4)

_HOSPITALS: tuple[tuple[HospitalInfo, tuple[_DeptSpec, ...]], ...] = (
    (
        HospitalInfo(
            code="H001",
            name="云岭市第一人民医院",
            level=HospitalLevel.TERTIARY,
            grade="三级甲等",
            kind="综合医院",
            district="鹿城区",
            address="云岭市鹿城区鹿城南路88号",
            phone="0878-3122120",
            onsite_share=0.3,
            saturday_share=0.25,
        ),
        (
            _DeptSpec("D101", "内科", 0, general_days=_ALL_WEEK, general_afternoon_days=_ALL_WEEK),
            _DeptSpec("D102", "心血管内科", 4, parent="D101"),
            _DeptSpec("D103", "消化内科", 3, parent="D101"),
            _DeptSpec("D104", "呼吸内科", 3, parent="D101"),
            _DeptSpec("D105", "神经内科", 3, parent="D101"),
            _DeptSpec("D106", "内分泌科", 3, parent="D101"),
            _DeptSpec("D107", "外科", 0, general_days=_MON_SAT),
            _DeptSpec("D108", "普外科", 3, parent="D107"),
            _DeptSpec("D109", "骨科", 3, parent="D107"),
            _DeptSpec("D110", "儿科", 4, general_days=_ALL_WEEK, general_afternoon_days=_ALL_WEEK),
            _DeptSpec("D111", "妇产科", 3),
            _DeptSpec("D112", "眼科", 2),
            _DeptSpec("D113", "耳鼻喉科", 2),
            _DeptSpec("D114", "口腔科", 2),
            _DeptSpec("D115", "皮肤科", 2),
            _DeptSpec("D116", "中医科", 2),
        ),
    ),
    (
        HospitalInfo(
            code="H002",
            name="云岭市西山区人民医院",
            level=HospitalLevel.SECONDARY,
            grade="二级甲等",
            kind="综合医院",
            district="西山区",
            address="云岭市西山区团结路126号",
            phone="0878-6215120",
            onsite_share=0.35,
            saturday_share=0.2,
        ),
        (
            _DeptSpec("D201", "内科", 4, general_days=_ALL_WEEK, general_afternoon_days=_WEEKDAYS, topic="大内科"),
            _DeptSpec("D202", "外科", 3, topic="大外科"),
            _DeptSpec("D203", "儿科", 3, general_days=_MON_SAT, general_afternoon_days=_MON_SAT),
            _DeptSpec("D204", "妇产科", 2),
            _DeptSpec("D205", "眼科", 1),
            _DeptSpec("D206", "耳鼻喉科", 1),
            _DeptSpec("D207", "口腔科", 1),
            _DeptSpec("D208", "中医科", 2),
        ),
    ),
    (
        HospitalInfo(
            code="H003",
            name="云岭市西山区桃源社区卫生服务中心",
            level=HospitalLevel.PRIMARY,
            grade="一级",
            kind="社区卫生服务中心",
            district="西山区",
            address="云岭市西山区桃源街道桃源路15号",
            phone="0878-6233065",
            onsite_share=0.4,
            saturday_share=0.4,
        ),
        (
            _DeptSpec("D301", "全科", 4, general_days=_ALL_WEEK, general_afternoon_days=_WEEKDAYS),
            _DeptSpec("D302", "中医科", 1),
            _DeptSpec("D303", "口腔科", 1),
            _DeptSpec("D304", "预防保健科", 1),
        ),
    ),
)

HOSPITAL_CODES: tuple[str, ...] = tuple(info.code for info, _ in _HOSPITALS)

_SPECIALTIES: dict[str, tuple[str, ...]] = {
    "内科": ("高血压", "糖尿病", "冠心病", "慢性胃炎", "肺炎", "慢性病管理"),
    "大内科": ("高血压", "糖尿病", "冠心病", "慢性胃炎", "肺炎", "慢性病管理"),
    "心血管内科": ("高血压", "冠心病", "心律失常", "心力衰竭", "高脂血症", "心肌病"),
    "消化内科": ("胃炎", "消化性溃疡", "脂肪肝", "肝硬化", "炎症性肠病", "胃肠镜检查"),
    "呼吸内科": ("慢性阻塞性肺疾病", "支气管哮喘", "肺炎", "肺结节", "睡眠呼吸暂停"),
    "神经内科": ("脑卒中", "头痛", "癫痫", "帕金森病", "眩晕", "失眠"),
    "内分泌科": ("糖尿病", "甲状腺疾病", "骨质疏松", "痛风", "肥胖症"),
    "外科": ("甲状腺结节", "疝气", "胆囊结石", "阑尾炎", "乳腺疾病", "体表肿物"),
    "大外科": ("甲状腺结节", "疝气", "胆囊结石", "阑尾炎", "骨折", "体表肿物"),
    "普外科": ("甲状腺结节", "疝气", "胆囊结石", "阑尾炎", "乳腺疾病", "体表肿物"),
    "骨科": ("颈椎病", "腰椎间盘突出", "骨折", "骨关节炎", "运动损伤"),
    "儿科": ("儿童哮喘", "小儿肺炎", "小儿腹泻", "儿童生长发育", "新生儿黄疸", "小儿发热"),
    "妇产科": ("产前检查", "月经不调", "子宫肌瘤", "妇科炎症", "不孕症", "围绝经期综合征"),
    "眼科": ("白内障", "青光眼", "近视防控", "干眼症", "糖尿病视网膜病变"),
    "耳鼻喉科": ("过敏性鼻炎", "鼻窦炎", "中耳炎", "慢性咽喉炎", "耳鸣耳聋", "打鼾"),
    "口腔科": ("龋齿", "牙周病", "根管治疗", "口腔修复", "儿童牙病", "智齿拔除"),
    "皮肤科": ("湿疹", "痤疮", "银屑病", "荨麻疹", "带状疱疹", "白癜风"),
    "中医科": ("中医内科调理", "失眠", "脾胃病", "针灸推拿", "颈肩腰腿痛", "亚健康调理"),
    "全科": ("高血压", "糖尿病", "慢性病管理", "常见病多发病", "家庭医生签约", "老年健康管理"),
    "预防保健科": ("儿童保健", "预防接种咨询", "健康体检", "老年人健康管理"),
}

_DESCRIPTIONS: dict[str, str] = {
    "内科": "内科门诊，诊治内科常见病、多发病，下设多个内科专科。",
    "大内科": "内科门诊，诊治心血管、呼吸、消化、内分泌等内科常见病、多发病。",
    "心血管内科": "诊治高血压、冠心病、心律失常、心力衰竭等心血管疾病。",
    "消化内科": "诊治胃肠、肝胆、胰腺疾病，开展胃肠镜检查。",
    "呼吸内科": "诊治慢阻肺、哮喘、肺炎、肺结节等呼吸系统疾病。",
    "神经内科": "诊治脑血管病、头痛、癫痫、帕金森病等神经系统疾病。",
    "内分泌科": "诊治糖尿病、甲状腺疾病、骨质疏松等内分泌代谢疾病。",
    "外科": "外科门诊，诊治外科常见病，下设普外科、骨科。",
    "大外科": "诊治普外、骨科、泌尿等外科常见病，开展常规手术。",
    "普外科": "诊治甲状腺、乳腺、肝胆、胃肠、疝等普外科疾病。",
    "骨科": "诊治骨折、颈腰椎疾病、关节疾病和运动损伤。",
    "儿科": "诊治儿童常见病、多发病，开展儿童生长发育评估。",
    "妇产科": "开展产前检查，诊治妇科常见病、多发病。",
    "眼科": "诊治白内障、青光眼、屈光不正等眼病。",
    "耳鼻喉科": "诊治耳、鼻、咽喉常见疾病。",
    "口腔科": "开展口腔检查、治疗、修复和儿童口腔保健。",
    "皮肤科": "诊治湿疹、痤疮、银屑病等常见皮肤病。",
    "中医科": "以中医药和针灸推拿诊治内科杂病和慢性病。",
    "全科": "社区全科门诊，慢性病管理、常见病诊治和家庭医生签约服务。",
    "预防保健科": "儿童保健、预防接种咨询、健康体检和老年人健康管理。",
}

_DEGREES = ("医学博士", "医学硕士", "医学学士")


def _pick_title(rng: random.Random, level: HospitalLevel) -> DoctorTitle:
    return rng.choices(_TITLE_ORDER, weights=_TITLE_WEIGHTS[level])[0]


def _titles(rng: random.Random, level: HospitalLevel, count: int) -> list[DoctorTitle]:
    """A department's titles, most senior first; at most half of them (at least one) senior."""
    titles = sorted((_pick_title(rng, level) for _ in range(count)), key=_TITLE_ORDER.index)
    seniors = [i for i, t in enumerate(titles) if t in (DoctorTitle.CHIEF, DoctorTitle.ASSOCIATE_CHIEF)]
    for i in seniors[max(1, count // 2) :]:
        titles[i] = DoctorTitle.ATTENDING
    return sorted(titles, key=_TITLE_ORDER.index)


def _name(rng: random.Random, taken: set[str]) -> tuple[str, str, str]:
    """A unique (family, given, gender) for one hospital."""
    while True:
        gender = rng.choice(("male", "female"))
        pool = _GIVEN_MALE if gender == "male" else _GIVEN_FEMALE
        family = rng.choice(_SURNAMES)
        length = 2 if rng.random() < 0.8 else 1
        given = "".join(rng.choice(pool) for _ in range(length))
        if len(given) == 2 and given[0] == given[1]:
            continue
        if family + given not in taken:
            taken.add(family + given)
            return family, given, gender


def _introduction(
    rng: random.Random, name: str, title: DoctorTitle, department: str, specialties: Sequence[str]
) -> str:
    low, high = _YEARS[title]
    years = rng.randint(low, high)
    senior = title in (DoctorTitle.CHIEF, DoctorTitle.ASSOCIATE_CHIEF)
    degree = rng.choice(_DEGREES[:2] if senior else _DEGREES)
    skills = "、".join(specialties)
    text = f"{name}，{TITLE_NAMES[title]}，{degree}，从事{department}临床工作{years}年，擅长{skills}的诊治。"
    if senior:
        text += rng.choice(("省医学会相关专业委员会委员。", "市级学科带头人。", "曾赴上级医院进修学习一年。"))
    return text


def _pattern(rng: random.Random, title: DoctorTitle, saturday_share: float) -> tuple[tuple[int, Period], ...]:
    half_days = [(weekday, period) for weekday in _WEEKDAYS for period in PERIOD_HOURS]
    count = {
        DoctorTitle.CHIEF: (1, 2),
        DoctorTitle.ASSOCIATE_CHIEF: (2, 3),
        DoctorTitle.ATTENDING: (3, 4),
        DoctorTitle.RESIDENT: (3, 5),
    }[title]
    chosen = rng.sample(half_days, rng.randint(*count))
    if rng.random() < saturday_share:
        chosen.append((5, Period.MORNING))
    return tuple(sorted(chosen, key=lambda half: (half[0], list(PERIOD_HOURS).index(half[1]))))


def generate_directory(rng: random.Random, *, on_leave: int = 4) -> list[Directory]:
    """The three hospitals with their departments and doctors; ``on_leave`` doctors in all are on leave."""
    drafts: list[tuple[HospitalInfo, list[DepartmentRec], list[DoctorRec]]] = []
    for number, (info, specs) in enumerate(_HOSPITALS, start=1):
        names: set[str] = set()
        departments: list[DepartmentRec] = []
        doctors: list[DoctorRec] = []
        for spec in specs:
            topic = spec.topic or spec.name
            departments.append(
                DepartmentRec(
                    code=spec.code,
                    name=spec.name,
                    parent=spec.parent,
                    description=_DESCRIPTIONS[topic],
                    general_days=spec.general_days,
                    general_afternoon_days=spec.general_afternoon_days,
                )
            )
            titles = _titles(rng, info.level, spec.doctors)
            for title in titles:
                family, given, gender = _name(rng, names)
                pool = _SPECIALTIES[topic]
                specialties = tuple(rng.sample(pool, rng.randint(2, 3)))
                doctors.append(
                    DoctorRec(
                        code=f"P{number}{len(doctors) + 1:03d}",
                        family=family,
                        given=given,
                        gender=gender,
                        title=title,
                        department_code=spec.code,
                        specialties=specialties,
                        introduction=_introduction(rng, family + given, title, spec.name, specialties),
                        pattern=_pattern(rng, title, info.saturday_share),
                    )
                )
        drafts.append((info, departments, doctors))

    everyone = [(h, i) for h, (_, _, doctors) in enumerate(drafts) for i in range(len(doctors))]
    for n, (h, i) in enumerate(sorted(rng.sample(everyone, on_leave))):
        doctors = drafts[h][2]
        mode = _STOPPED if n % 2 == 0 else _ABSENT
        doctors[i] = _replace_doctor(doctors[i], on_leave=True, leave_mode=mode)
    return [Directory(info, tuple(departments), tuple(doctors)) for info, departments, doctors in drafts]


def _replace_doctor(doctor: DoctorRec, *, on_leave: bool, leave_mode: str) -> DoctorRec:
    return DoctorRec(
        code=doctor.code,
        family=doctor.family,
        given=doctor.given,
        gender=doctor.gender,
        title=doctor.title,
        department_code=doctor.department_code,
        specialties=doctor.specialties,
        introduction=doctor.introduction,
        pattern=doctor.pattern,
        on_leave=on_leave,
        leave_mode=leave_mode,
    )


# --- sessions ----------------------------------------------------------------------------------------------


def session_id(day: date, period: Period, owner: str) -> str:
    """``S20250303-P1001-AM``: the date, the doctor (or the department of a general clinic), the period."""
    return f"S{day:%Y%m%d}-{owner}-{'AM' if period is Period.MORNING else 'PM'}"


def _numbers(title: DoctorTitle | None) -> tuple[int, int]:
    """Numbers per slot (all, including on-site) as a range by title: seniors see fewer patients."""
    if title in (DoctorTitle.CHIEF, DoctorTitle.ASSOCIATE_CHIEF):
        return 2, 4
    if title is DoctorTitle.ATTENDING:
        return 3, 5
    return 4, 6


def _session(
    rng: random.Random,
    hospital: HospitalInfo,
    *,
    department_code: str,
    doctor: DoctorRec | None,
    day: date,
    period: Period,
    offset_days: int,
    now: datetime,
) -> SessionRec:
    begin, finish = PERIOD_HOURS[period]
    start = datetime.combine(day, begin, tzinfo=SHANGHAI)
    end = datetime.combine(day, finish, tzinfo=SHANGHAI)
    title = doctor.title if doctor else None
    ident = session_id(day, period, doctor.code if doctor else department_code)
    full = rng.random() < _FULL_SHARE
    fill = max(0.05, 0.75 - 0.06 * offset_days) + (0.1 if title is DoctorTitle.CHIEF else 0.0)
    low, high = _numbers(title)
    slots: list[SlotRec] = []
    number = 1
    moment = start
    while moment < end:
        total = rng.randint(low, high)
        onsite = max(1, round(total * hospital.onsite_share))
        capacity = total - onsite
        booked = capacity if full else sum(rng.random() < fill for _ in range(capacity))
        slots.append(
            SlotRec(
                id=f"{ident}-{len(slots) + 1:02d}",
                session_id=ident,
                index=len(slots),
                start=moment,
                end=moment + timedelta(minutes=SLOT_MINUTES),
                onsite=onsite,
                capacity=capacity,
                external=booked,
                first_number=number,
                used=set(range(booked)),
                last_updated=now,
            )
        )
        number += total
        moment += timedelta(minutes=SLOT_MINUTES)
    session = SessionRec(
        id=ident,
        department_code=department_code,
        doctor_code=doctor.code if doctor else None,
        title=title,
        day=day,
        period=period,
        start=start,
        end=end,
        fee=FEES[title],
        slots=slots,
        last_updated=now,
    )
    if doctor is not None and doctor.on_leave:
        session.active, session.stop_reason = False, LEAVE_REASON
    elif rng.random() < _STOPPED_SHARE:
        session.active, session.stop_reason = False, rng.choice(_STOP_REASONS)
    return session


def generate_day(
    directory: Directory, day: date, *, today: date, rng: random.Random, now: datetime
) -> list[SessionRec]:
    """The sessions of one hospital on ``day``, general clinics first, then doctors in directory order."""
    weekday = day.weekday()
    offset_days = (day - today).days
    owners: list[tuple[str, DoctorRec | None, Period]] = []
    for department in directory.departments:
        for period, days in (
            (Period.MORNING, department.general_days),
            (Period.AFTERNOON, department.general_afternoon_days),
        ):
            if weekday in days:
                owners.append((department.code, None, period))
    for doctor in directory.doctors:
        if doctor.on_leave and doctor.leave_mode == _ABSENT:
            continue
        owners.extend(
            (doctor.department_code, doctor, period) for half_day, period in doctor.pattern if half_day == weekday
        )
    return [
        _session(
            rng,
            directory.hospital,
            department_code=department_code,
            doctor=doctor,
            day=day,
            period=period,
            offset_days=offset_days,
            now=now,
        )
        for department_code, doctor, period in owners
    ]

//! Network rules: each economic network's own governance, written down as data in its ledger
//! and judged identically on every replica (docs/rules.md).
//!
//! A network's [`RuleSet`] is an object of the ledger (kind `ruleSets`, id `network`), written
//! only by admins, versioned. Each [`Rule`] is an expression of the Common Expression Language
//! (crate `cel`) that must hold for an economic event; it is compiled and checked before it is
//! written ([`RuleSet::compile`]) and again by every replica that admits the write. A rule's
//! outcome is either *refuse* (the change recording the event is quarantined with the rule's
//! name and message: [`crate::Rejection::RuleRefused`]) or *flag* (the event stands, and a
//! [`crate::Conflict::RuleViolation`] names it and the rule). A rule that fails to evaluate
//! is a flagged error, never a silent pass.
//!
//! What a rule sees, and nothing else: `event` (the event as recorded), `recorder` (the
//! recording device, the agent it acts for and its role in the change's causal past) and, for
//! flag rules only, `resource` (the state of the event's resource at the event's place in
//! the ledger's order). No clock, no randomness, no I/O, no floating point, no loops: every
//! rule is a bounded, side-effect-free expression whose value depends only on those inputs.
//!
//! Pure: no I/O.

mod index;

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::common::types::{CelInt, CelMap, CelMapKey, CelNull, CelString};
use cel::objects::Value;
use cel::{Context, Env, IdedExpr, Program};
use serde::{Deserialize, Serialize};

use crate::membership::{Member, Role};
use crate::vf::{Action, EconomicEvent, Id, Measure, ObjectKind, Quantity, VfObject};

pub(crate) use index::{EventRules, RuleIndex};

/// The id of a network's one rule set.
pub const RULE_SET_ID: &str = "network";
/// Most rules in one rule set.
pub const MAX_RULES: usize = 64;
/// Longest rule expression, in bytes.
pub const MAX_CHECK_BYTES: usize = 2048;
/// Most syntax-tree nodes of one rule expression: evaluating a rule costs at most this many
/// steps (plus the length of the strings it compares), since the language has no loops here.
pub const MAX_NODES: usize = 256;
/// Longest rule name or message, in bytes.
pub const MAX_TEXT_BYTES: usize = 512;
/// The rule-set format this code writes and the newest it reads: 1 (no `format` field in the
/// ledger) has name, version, rules and note; 2 adds [`RecordForOthers`]
/// (`recordForOthers`). A rule set of a newer format is refused at admission
/// (`InvalidRules`), never read as far as this code understands it.
pub const RULE_SET_FORMAT: u32 = 2;
/// Most entries in a [`RecordForOthers`] grant (roles, agents and devices together).
pub const MAX_GRANTS: usize = 256;

/// What happens to an event a rule does not hold for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The change that records it is refused at admission and quarantined.
    Refuse,
    /// The event stands; a `RuleViolation` conflict names it and the rule.
    Flag,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Refuse => "refuse",
            Outcome::Flag => "flag",
        })
    }
}

/// One rule: for the events it applies to, `check` must be true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The rule's name, unique in its set: how refusals and flags name it.
    pub name: String,
    /// Refuse or flag.
    pub outcome: Outcome,
    /// The actions it applies to (empty: every event).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// A CEL expression over `event`, `recorder` (and `resource` for flag rules) that is true
    /// for an event that keeps the rule.
    pub check: String,
    /// What a person is told when an event breaks the rule.
    pub message: String,
}

/// Who, besides admins, may record events (and make commitments, intents and claims) between
/// other agents: the grant of `recordForOthers` in a rule set (format 2, docs/rules.md,
/// "Recording for others"). A device holds it if its role, its agent or the device itself is
/// named, as its membership is in the causal past of the change it writes; the grant in force
/// is the one of the rule set in force in that causal past, like every rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordForOthers {
    /// Roles whose devices hold it (`member`; an admin always records for others, an observer
    /// records nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Agents whose devices hold it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<Id>,
    /// Devices (hex ids) that hold it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

impl RecordForOthers {
    /// Whether it names no one.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.agents.is_empty() && self.devices.is_empty()
    }

    /// Whether `member` (its membership where the grant is in force) holds it.
    pub fn grants(&self, member: &Member) -> bool {
        self.roles.contains(&member.role)
            || self.agents.contains(&member.agent)
            || self.devices.iter().any(|d| *d == member.device.to_string())
    }

    fn check(&self) -> Result<(), RuleError> {
        let bad = |detail: String| Err(RuleError::BadGrant(detail));
        if self.roles.len() + self.agents.len() + self.devices.len() > MAX_GRANTS {
            return bad(format!("more than {MAX_GRANTS} entries"));
        }
        if self.roles.contains(&Role::Observer) {
            return bad("names the role observer, which records nothing".into());
        }
        for a in &self.agents {
            if !crate::schema::valid_id(a.as_str()) {
                return bad(format!("agent {:?} is not a valid id", a.as_str()));
            }
        }
        for d in &self.devices {
            let ok = d
                .parse::<crate::identity::DeviceId>()
                .is_ok_and(|id| id.to_string() == *d);
            if !ok {
                return bad(format!(
                    "device {d:?} is not a device id (64 lowercase hex digits)"
                ));
            }
        }
        Ok(())
    }
}

fn format_one() -> u32 {
    1
}

/// A network's rules, as stored in its ledger (kind `ruleSets`, id [`RULE_SET_ID`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSet {
    /// Id (always [`RULE_SET_ID`]).
    #[serde(skip)]
    pub id: Id,
    /// The format (1 or 2, [`RULE_SET_FORMAT`]); absent in the ledger: 1 (written before
    /// formats were numbered).
    #[serde(default = "format_one")]
    pub format: u32,
    /// A display name ("Saturday market rules").
    pub name: String,
    /// The version: every publication raises it above the version in force in its causal
    /// past.
    pub version: u64,
    /// The rules.
    pub rules: Vec<Rule>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who besides admins records for others (format 2; empty: admins only).
    #[serde(default, skip_serializing_if = "RecordForOthers::is_empty")]
    pub record_for_others: RecordForOthers,
}

impl VfObject for RuleSet {
    const KIND: ObjectKind = ObjectKind::RuleSet;
    fn id(&self) -> &Id {
        &self.id
    }
    fn set_id(&mut self, id: Id) {
        self.id = id;
    }
}

/// Why a rule set cannot be compiled (it is refused at write and at admission).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule set is not readable JSON of a rule set.
    #[error("not a rule set: {0}")]
    Unreadable(String),
    /// More rules than [`MAX_RULES`].
    #[error("{0} rules; at most {MAX_RULES}")]
    TooManyRules(usize),
    /// Two rules share a name.
    #[error("two rules are named {0:?}")]
    DuplicateName(String),
    /// A format this code does not know (newer than [`RULE_SET_FORMAT`]), or a field that
    /// the declared format does not have.
    #[error("rule-set format {format}: {detail}")]
    Format {
        /// The declared format.
        format: u32,
        /// What is wrong.
        detail: String,
    },
    /// The `recordForOthers` grant names something that cannot hold it.
    #[error("recordForOthers: {0}")]
    BadGrant(String),
    /// A name or message is empty or too long.
    #[error("rule {rule:?}: {detail}")]
    BadText {
        /// The rule.
        rule: String,
        /// What is wrong.
        detail: String,
    },
    /// The expression does not parse.
    #[error("rule {rule:?}: the check does not parse: {detail}")]
    Parse {
        /// The rule.
        rule: String,
        /// The parser's message.
        detail: String,
    },
    /// The expression uses something a rule may not (a floating-point number, a loop, an
    /// unknown variable or function), or is too large.
    #[error("rule {rule:?}: {detail}")]
    NotAllowed {
        /// The rule.
        rule: String,
        /// What it uses.
        detail: String,
    },
}

/// The recording device as a rule sees it: `recorder.device`, `recorder.agent`,
/// `recorder.role` (`"admin"`, `"member"`, `"observer"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorder {
    /// The device id (hex).
    pub device: String,
    /// The agent the device acts for.
    pub agent: Id,
    /// Its role in the change's causal past.
    pub role: Role,
}

/// The state of an event's resource as a flag rule sees it (`resource`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceSeen {
    /// The resource.
    pub id: Id,
    /// Its unit, if known.
    pub unit: Option<Id>,
    /// Onhand quantity.
    pub onhand: Quantity,
    /// Accounting quantity.
    pub accounting: Quantity,
    /// Custodian.
    pub custodian: Option<Id>,
    /// Primary accountable agent.
    pub accountable: Option<Id>,
    /// Current location.
    pub location: Option<Id>,
    /// State (pass/fail...).
    pub state: Option<String>,
}

/// A rule an event does not keep, or could not be judged by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The rule's name.
    pub rule: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// The rule's message, or (evaluation error) what went wrong.
    pub message: String,
    /// The evaluation error, if the rule could not be evaluated (it is flagged, whatever
    /// its outcome).
    pub error: Option<String>,
}

struct Compiled {
    rule: Rule,
    program: Program,
    uses: Uses,
}

/// A compiled rule set: what replicas evaluate.
pub struct CompiledRules {
    set: RuleSet,
    rules: Vec<Compiled>,
    env: Arc<Env>,
    has_flags: bool,
    has_refusals: bool,
    /// The actions (bit i: `Action::ALL[i]`) some flag rule applies to, and some refuse rule.
    flag_actions: u32,
    refuse_actions: u32,
    /// What the flag rules read, and what the refuse rules read.
    uses_flag: Uses,
    uses_refuse: Uses,
}

impl std::fmt::Debug for CompiledRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRules")
            .field("version", &self.set.version)
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// Which rules [`CompiledRules::evaluate`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Refuse rules (admission, without `resource`): a finding with no `error` refuses the
    /// change; one with an `error` does not, and the views flag it (carried from admission).
    Refuse,
    /// Flag rules (the views, with the resource as seen).
    Flag,
}

/// Functions and operators a rule may call. Everything else (`double`, `timestamp`,
/// `duration`, `matches`, the optional library, macros that loop) is refused.
const ALLOWED_CALLS: &[&str] = &[
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "string",
];

fn env() -> Arc<Env> {
    // Without optional support: the optional library (and its syntax) is not part of the
    // rule language. The standard macros stay so that `has(x.f)` parses; the loop macros are
    // refused by `check_tree`.
    Arc::new(Env::stdlib().with_optional_support(false))
}

/// What a rule set reads of one input variable, or of one field of it: only that is built for
/// each evaluation. Nested: `resource.onhand.milli` reads `milli` of the field `onhand`, and
/// nothing else of either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum VarUse {
    /// Not at all.
    #[default]
    None,
    /// Only these fields, each with what is read of it. `Fields` of no field is a value read
    /// only for whether it is there (`resource == null`): any map, even an empty one, is not
    /// null, so the verdict is the same as with every field built.
    Fields(std::collections::BTreeMap<String, VarUse>),
    /// As a whole (`event == {...}`, `event['x']`, `size(resource)`): every field, and
    /// every field of those.
    All,
}

impl VarUse {
    /// Presence only (`x == null`): read, but no field of it.
    fn presence() -> VarUse {
        VarUse::Fields(Default::default())
    }
    /// Read `path` (fields from this value down), its last field as `leaf` says.
    fn add(&mut self, path: &[&str], leaf: VarUse) {
        let Some((first, rest)) = path.split_first() else {
            self.union(&leaf);
            return;
        };
        if *self == VarUse::None {
            *self = VarUse::presence();
        }
        if let VarUse::Fields(f) = self {
            f.entry(first.to_string())
                .or_insert_with(VarUse::presence)
                .add(rest, leaf);
        }
    }
    fn union(&mut self, other: &VarUse) {
        match (&mut *self, other) {
            (_, VarUse::None) | (VarUse::All, _) => {}
            (_, VarUse::All) => *self = VarUse::All,
            (VarUse::None, VarUse::Fields(_)) => *self = other.clone(),
            (VarUse::Fields(mine), VarUse::Fields(theirs)) => {
                for (k, v) in theirs {
                    mine.entry(k.clone())
                        .or_insert_with(VarUse::presence)
                        .union(v);
                }
            }
        }
    }
    fn reads(&self) -> bool {
        *self != VarUse::None
    }
    fn wants(&self, field: &str) -> bool {
        match self {
            VarUse::None => false,
            VarUse::Fields(f) => f.contains_key(field),
            VarUse::All => true,
        }
    }
    /// What is read of `field` (presence only for a field not read at all: its caller does
    /// not build it).
    fn of(&self, field: &str) -> &VarUse {
        static PRESENCE: std::sync::OnceLock<VarUse> = std::sync::OnceLock::new();
        match self {
            VarUse::All => &VarUse::All,
            VarUse::Fields(f) => f
                .get(field)
                .unwrap_or_else(|| PRESENCE.get_or_init(VarUse::presence)),
            VarUse::None => PRESENCE.get_or_init(VarUse::presence),
        }
    }
}

/// What a rule (or a rule set) reads of `event`, `recorder`, `resource`: only that is built
/// for each evaluation.
#[derive(Debug, Clone, Default)]
struct Uses {
    event: VarUse,
    recorder: VarUse,
    resource: VarUse,
}

impl Uses {
    fn var(&mut self, name: &str) -> Option<&mut VarUse> {
        match name {
            "event" => Some(&mut self.event),
            "recorder" => Some(&mut self.recorder),
            "resource" => Some(&mut self.resource),
            _ => None,
        }
    }
    fn union(&mut self, o: &Uses) {
        self.event.union(&o.event);
        self.recorder.union(&o.recorder);
        self.resource.union(&o.resource);
    }
}

/// Walk a rule's syntax tree: count nodes, refuse what a rule may not use, note what it reads
/// of its inputs.
fn check_tree(e: &IdedExpr, nodes: &mut usize, uses: &mut Uses) -> Result<(), String> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(format!("more than {MAX_NODES} syntax nodes"));
    }
    match &e.expr {
        Expr::Unspecified => Err("an unspecified expression".into()),
        Expr::Literal(LiteralValue::Double(_)) => Err(
            "a floating-point number: rules use integers (quantities in thousandths: `milli`)"
                .into(),
        ),
        Expr::Literal(LiteralValue::Bytes(_)) => Err("a bytes literal".into()),
        Expr::Literal(_) => Ok(()),
        Expr::Ident(_) | Expr::Select(_) => read_path(e, nodes, uses, VarUse::All),
        Expr::Call(c) => {
            if !ALLOWED_CALLS.contains(&c.func_name.as_str()) {
                return Err(format!("the function {:?} is not allowed", c.func_name));
            }
            // `x == null`, `x != null` (either way round) on an input or a field of one reads
            // only whether it is there.
            if c.target.is_none() && matches!(c.func_name.as_str(), "_==_" | "_!=_") {
                if let [a, b] = c.args.as_slice() {
                    let is_null =
                        |x: &IdedExpr| matches!(x.expr, Expr::Literal(LiteralValue::Null));
                    let other = if is_null(b) {
                        Some(a)
                    } else if is_null(a) {
                        Some(b)
                    } else {
                        None
                    };
                    if let Some(x) =
                        other.filter(|x| matches!(x.expr, Expr::Ident(_) | Expr::Select(_)))
                    {
                        *nodes += 2;
                        if *nodes > MAX_NODES {
                            return Err(format!("more than {MAX_NODES} syntax nodes"));
                        }
                        return read_path(x, nodes, uses, VarUse::presence());
                    }
                }
            }
            if let Some(t) = &c.target {
                check_tree(t, nodes, uses)?;
            }
            for a in &c.args {
                check_tree(a, nodes, uses)?;
            }
            Ok(())
        }
        Expr::List(l) => {
            for a in &l.elements {
                check_tree(a, nodes, uses)?;
            }
            Ok(())
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => {
                        check_tree(&me.key, nodes, uses)?;
                        check_tree(&me.value, nodes, uses)?;
                    }
                    EntryExpr::StructField(_) => return Err("a struct literal".into()),
                }
            }
            Ok(())
        }
        Expr::Comprehension(_) => {
            Err("a loop macro (all, exists, exists_one, map, filter): rules have no loops".into())
        }
        Expr::Struct(_) => Err("a struct literal".into()),
    }
}

/// An identifier or a chain of field selections (`resource.onhand.milli`, `has(event.note)`):
/// note what it reads of an input (its last field as `leaf` says), or, if it does not start
/// at an input's name, walk the expression it selects from.
fn read_path(e: &IdedExpr, nodes: &mut usize, uses: &mut Uses, leaf: VarUse) -> Result<(), String> {
    let mut path = Vec::new();
    let mut at = e;
    while let Expr::Select(s) = &at.expr {
        path.push(s.field.as_str());
        at = &s.operand;
    }
    path.reverse();
    // `e` itself was counted by the caller; the rest of the chain here, except an expression
    // selected from that is not a name (counted as it is walked).
    let base_is_name = matches!(at.expr, Expr::Ident(_));
    *nodes += if base_is_name {
        path.len()
    } else {
        path.len() - 1
    };
    if *nodes > MAX_NODES {
        return Err(format!("more than {MAX_NODES} syntax nodes"));
    }
    match &at.expr {
        Expr::Ident(name) => match uses.var(name) {
            Some(v) => {
                v.add(&path, leaf);
                Ok(())
            }
            None => Err(format!(
                "unknown name {name:?}: a rule reads only event, recorder and resource"
            )),
        },
        // Something else selected from (a map literal, a call's result): every field of what
        // it reads.
        _ => check_tree(at, nodes, uses),
    }
}

fn check_text(rule: &str, what: &str, text: &str) -> Result<(), RuleError> {
    if text.trim().is_empty() || text.len() > MAX_TEXT_BYTES || text.chars().any(char::is_control) {
        return Err(RuleError::BadText {
            rule: rule.into(),
            detail: format!(
                "its {what} is empty, over {MAX_TEXT_BYTES} bytes or has control characters"
            ),
        });
    }
    Ok(())
}

impl RuleSet {
    /// A rule set named `name` at `version`.
    pub fn new(name: impl Into<String>, version: u64, rules: Vec<Rule>) -> RuleSet {
        RuleSet {
            id: Id::from(RULE_SET_ID),
            format: RULE_SET_FORMAT,
            name: name.into(),
            version,
            rules,
            note: None,
            record_for_others: RecordForOthers::default(),
        }
    }

    /// Read a rule set from its JSON (the file format of `reflow rules set`). A file that
    /// says no `format` is read as the current one ([`RULE_SET_FORMAT`]): a person writes it
    /// now (in the ledger, a rule set without `format` is of format 1).
    pub fn from_json(text: &str) -> Result<RuleSet, RuleError> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RuleError::Unreadable(e.to_string()))?;
        if let Some(obj) = value.as_object_mut() {
            obj.entry("format")
                .or_insert_with(|| serde_json::Value::from(RULE_SET_FORMAT));
        }
        let mut set: RuleSet =
            serde_json::from_value(value).map_err(|e| RuleError::Unreadable(e.to_string()))?;
        set.id = Id::from(RULE_SET_ID);
        Ok(set)
    }

    /// The rule set as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Compile and check every rule (names, sizes, the language subset).
    pub fn compile(&self) -> Result<CompiledRules, RuleError> {
        if self.format == 0 || self.format > RULE_SET_FORMAT {
            return Err(RuleError::Format {
                format: self.format,
                detail: format!("this code reads formats 1 to {RULE_SET_FORMAT}"),
            });
        }
        if self.format < 2 && !self.record_for_others.is_empty() {
            return Err(RuleError::Format {
                format: self.format,
                detail: "recordForOthers is a field of format 2".into(),
            });
        }
        self.record_for_others.check()?;
        if self.rules.len() > MAX_RULES {
            return Err(RuleError::TooManyRules(self.rules.len()));
        }
        check_text("", "set name", &self.name).map_err(|_| RuleError::BadText {
            rule: String::new(),
            detail: "the rule set's name is empty or too long".into(),
        })?;
        let env = env();
        let mut names = std::collections::BTreeSet::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            check_text(&r.name, "name", &r.name)?;
            check_text(&r.name, "message", &r.message)?;
            if !names.insert(r.name.clone()) {
                return Err(RuleError::DuplicateName(r.name.clone()));
            }
            if r.check.len() > MAX_CHECK_BYTES {
                return Err(RuleError::NotAllowed {
                    rule: r.name.clone(),
                    detail: format!(
                        "a check of {} bytes (at most {MAX_CHECK_BYTES})",
                        r.check.len()
                    ),
                });
            }
            let program = env.compile(&r.check).map_err(|e| RuleError::Parse {
                rule: r.name.clone(),
                detail: e.to_string(),
            })?;
            let mut nodes = 0;
            let mut uses = Uses::default();
            check_tree(program.expression(), &mut nodes, &mut uses).map_err(|detail| {
                RuleError::NotAllowed {
                    rule: r.name.clone(),
                    detail,
                }
            })?;
            if uses.resource.reads() && r.outcome == Outcome::Refuse {
                return Err(RuleError::NotAllowed {
                    rule: r.name.clone(),
                    detail: "a refuse rule reads `resource`: resource state is for flag rules \
                             (admission judges a change without applying it)"
                        .into(),
                });
            }
            rules.push(Compiled {
                rule: r.clone(),
                program,
                uses,
            });
        }
        let has_flags = rules.iter().any(|c| c.rule.outcome == Outcome::Flag);
        let has_refusals = rules.iter().any(|c| c.rule.outcome == Outcome::Refuse);
        let (mut flag, mut refuse) = (Uses::default(), Uses::default());
        let (mut flag_actions, mut refuse_actions) = (0u32, 0u32);
        for c in &rules {
            let mask = if c.rule.actions.is_empty() {
                u32::MAX
            } else {
                c.rule.actions.iter().fold(0, |m, a| m | action_bit(*a))
            };
            match c.rule.outcome {
                Outcome::Flag => {
                    flag.union(&c.uses);
                    flag_actions |= mask;
                }
                Outcome::Refuse => {
                    refuse.union(&c.uses);
                    refuse_actions |= mask;
                }
            }
        }
        Ok(CompiledRules {
            set: self.clone(),
            rules,
            env,
            has_flags,
            has_refusals,
            flag_actions,
            refuse_actions,
            uses_flag: flag,
            uses_refuse: refuse,
        })
    }
}

/// An action's bit in [`CompiledRules`]' action masks.
fn action_bit(action: Action) -> u32 {
    Action::ALL
        .iter()
        .position(|a| *a == action)
        .map_or(u32::MAX, |i| 1 << i)
}

/// An input value as the CEL interpreter holds it, borrowing its strings from the event,
/// recorder and resource for the length of one evaluation (no copies, no conversion from
/// `cel::Value`).
type Val<'v> = Box<dyn cel::common::value::Val + 'v>;

fn text(s: &str) -> Val<'_> {
    Box::new(CelString::from(s))
}

fn null<'v>() -> Val<'v> {
    Box::new(CelNull)
}

fn opt_id(id: &Option<Id>) -> Val<'_> {
    id.as_ref().map_or_else(null, |i| text(i.as_str()))
}

fn opt_text(s: &Option<String>) -> Val<'_> {
    s.as_deref().map_or_else(null, text)
}

/// A quantity as rules see it: `value` (the exact decimal as a string), `milli` (thousandths
/// of the unit, an integer, truncated toward zero: exact for up to three decimals) and `unit`;
/// only the fields `want` asks for.
fn quantity<'v>(q: Quantity, unit: Option<&'v Id>, want: &VarUse) -> Val<'v> {
    use rust_decimal::prelude::ToPrimitive;
    map_of(
        want,
        &[
            ("value", &|| Box::new(CelString::from(q.to_string()))),
            ("milli", &|| {
                let milli = (q.value() * rust_decimal::Decimal::from(1000))
                    .trunc()
                    .to_i64()
                    .unwrap_or(i64::MAX);
                Box::new(CelInt::from(milli))
            }),
            ("unit", &|| unit.map_or_else(null, |u| text(u.as_str()))),
        ],
    )
}

fn measure<'v>(m: &'v Option<Measure>, want: &VarUse) -> Val<'v> {
    m.as_ref().map_or_else(null, |m| {
        quantity(m.has_numerical_value, Some(&m.has_unit), want)
    })
}

fn map<'v>(size: usize, entries: impl IntoIterator<Item = (&'static str, Val<'v>)>) -> Val<'v> {
    // Sized once: no rehash while it fills.
    let mut m: HashMap<CelMapKey<'v>, Val<'v>> = HashMap::with_capacity(size);
    for (k, v) in entries {
        m.insert(CelMapKey::from(k), v);
    }
    Box::new(CelMap::from(m))
}

/// A field of an input: its name, and how to make its value (called only if a rule reads it).
type Field<'a, 'v> = (&'static str, &'a dyn Fn() -> Val<'v>);

/// A map of the entries `want` asks for; values are made only for those.
fn map_of<'v>(want: &VarUse, entries: &[Field<'_, 'v>]) -> Val<'v> {
    let size = match want {
        VarUse::All => entries.len(),
        VarUse::Fields(f) => f.len(),
        VarUse::None => 0,
    };
    map(
        size,
        entries
            .iter()
            .filter(|(k, _)| want.wants(k))
            .map(|(k, v)| (*k, v())),
    )
}

/// `event` as a rule sees it (the fields `want` asks for).
fn event_value<'v>(e: &'v EconomicEvent, want: &VarUse) -> Val<'v> {
    map_of(
        want,
        &[
            ("id", &|| text(e.id.as_str())),
            ("action", &|| text(e.action.as_str())),
            ("provider", &|| opt_id(&e.provider)),
            ("receiver", &|| opt_id(&e.receiver)),
            ("resource", &|| opt_id(&e.resource_inventoried_as)),
            ("toResource", &|| opt_id(&e.to_resource_inventoried_as)),
            ("createdResource", &|| opt_id(&e.created_resource)),
            ("conformsTo", &|| opt_id(&e.resource_conforms_to)),
            ("quantity", &|| {
                measure(&e.resource_quantity, want.of("quantity"))
            }),
            ("effort", &|| measure(&e.effort_quantity, want.of("effort"))),
            ("inputOf", &|| opt_id(&e.input_of)),
            ("outputOf", &|| opt_id(&e.output_of)),
            ("atLocation", &|| opt_id(&e.at_location)),
            ("toLocation", &|| opt_id(&e.to_location)),
            ("corrects", &|| opt_id(&e.corrects)),
            ("state", &|| opt_text(&e.state)),
        ],
    )
}

fn recorder_value<'v>(r: &'v Recorder, want: &VarUse) -> Val<'v> {
    map_of(
        want,
        &[
            ("device", &|| text(&r.device)),
            ("agent", &|| text(r.agent.as_str())),
            ("role", &|| text(r.role.as_str())),
        ],
    )
}

fn resource_value<'v>(r: Option<&'v ResourceSeen>, want: &VarUse) -> Val<'v> {
    let Some(r) = r else { return null() };
    map_of(
        want,
        &[
            ("id", &|| text(r.id.as_str())),
            ("unit", &|| opt_id(&r.unit)),
            ("onhand", &|| {
                quantity(r.onhand, r.unit.as_ref(), want.of("onhand"))
            }),
            ("accounting", &|| {
                quantity(r.accounting, r.unit.as_ref(), want.of("accounting"))
            }),
            ("custodian", &|| opt_id(&r.custodian)),
            ("accountable", &|| opt_id(&r.accountable)),
            ("location", &|| opt_id(&r.location)),
            ("state", &|| opt_text(&r.state)),
        ],
    )
}

impl CompiledRules {
    /// The rule set these were compiled from.
    pub fn rule_set(&self) -> &RuleSet {
        &self.set
    }

    /// Whether any rule flags (so the views have something to evaluate).
    pub fn has_flags(&self) -> bool {
        self.has_flags
    }

    /// Whether any flag rule reads `resource` (so the views work out the resource's state as
    /// seen; refuse rules never see it).
    pub fn reads_resource(&self) -> bool {
        self.uses_flag.resource.reads()
    }

    /// Whether the rules of `which` read `event.id` (else an evaluation need not set it).
    pub fn reads_event_id(&self, which: Which) -> bool {
        match which {
            Which::Refuse => self.uses_refuse.event.wants("id"),
            Which::Flag => self.uses_flag.event.wants("id"),
        }
    }

    /// Whether any rule of `which` applies to every action (so an event's action need not
    /// be known to know that it is judged).
    pub fn applies_to_all(&self, which: Which) -> bool {
        match which {
            Which::Refuse => self.refuse_actions == u32::MAX,
            Which::Flag => self.flag_actions == u32::MAX,
        }
    }

    /// Whether any rule refuses.
    pub fn has_refusals(&self) -> bool {
        self.has_refusals
    }

    /// Whether any rule of `which` applies to events of `action` (else
    /// [`CompiledRules::evaluate`] finds nothing for them, and needs no inputs).
    pub fn applies(&self, which: Which, action: Action) -> bool {
        let mask = match which {
            Which::Refuse => self.refuse_actions,
            Which::Flag => self.flag_actions,
        };
        mask & action_bit(action) != 0
    }

    /// Judge one event by the refuse rules or the flag rules (`which`), in rule order: a
    /// finding for each rule that does not hold for it (`error` is `None`) or could not be
    /// evaluated (`error` says why). At admission a finding without an error refuses the
    /// change; one with an error does not (an admin's typo must not lock a market out), and
    /// the views flag it with the flag rules' findings.
    pub fn evaluate(
        &self,
        event: &EconomicEvent,
        recorder: &Recorder,
        resource: Option<&ResourceSeen>,
        which: Which,
    ) -> Vec<Finding> {
        let (wanted, uses) = match which {
            Which::Refuse => (Outcome::Refuse, &self.uses_refuse),
            Which::Flag => (Outcome::Flag, &self.uses_flag),
        };
        let mut out = Vec::new();
        if !self.applies(which, event.action) {
            return out;
        }
        let mut ctx: Option<Context<'_, '_>> = None;
        for c in &self.rules {
            if c.rule.outcome != wanted {
                continue;
            }
            if !c.rule.actions.is_empty() && !c.rule.actions.contains(&event.action) {
                continue;
            }
            // The inputs, built once for all the rules that apply (only what they read).
            let ctx = ctx.get_or_insert_with(|| {
                let mut ctx = Context::with_env(self.env.clone());
                if uses.event.reads() {
                    ctx.add_variable_as_val("event", event_value(event, &uses.event));
                }
                if uses.recorder.reads() {
                    ctx.add_variable_as_val("recorder", recorder_value(recorder, &uses.recorder));
                }
                if uses.resource.reads() {
                    ctx.add_variable_as_val("resource", resource_value(resource, &uses.resource));
                }
                ctx
            });
            let verdict = match c.program.execute(ctx) {
                Ok(Value::Bool(b)) => Ok(b),
                Ok(other) => Err(format!("the check gave {other:?}, not true or false")),
                Err(e) => Err(e.to_string()),
            };
            match verdict {
                Ok(true) => {}
                Ok(false) => out.push(Finding {
                    rule: c.rule.name.clone(),
                    outcome: c.rule.outcome,
                    message: c.rule.message.clone(),
                    error: None,
                }),
                Err(e) => out.push(Finding {
                    rule: c.rule.name.clone(),
                    outcome: c.rule.outcome,
                    message: format!("the rule could not be evaluated: {e}"),
                    error: Some(e),
                }),
            }
        }
        out
    }
}

/// A pilot template: a rule set to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// Its name (`food-market`, `repair-cafe`, `collection`, `time-bank`).
    pub name: &'static str,
    /// Its JSON; agent ids in it (`cafe`, `market`) are the ones a network replaces.
    pub json: &'static str,
}

/// The pilot templates (engine/src/rules/templates/).
pub const TEMPLATES: [Template; 4] = [
    Template {
        name: "food-market",
        json: include_str!("templates/food-market.json"),
    },
    Template {
        name: "repair-cafe",
        json: include_str!("templates/repair-cafe.json"),
    },
    Template {
        name: "collection",
        json: include_str!("templates/collection.json"),
    },
    Template {
        name: "time-bank",
        json: include_str!("templates/time-bank.json"),
    },
];

/// The template named `name`, parsed.
pub fn template(name: &str) -> Option<RuleSet> {
    TEMPLATES
        .iter()
        .find(|t| t.name == name)
        .and_then(|t| RuleSet::from_json(t.json).ok())
}

#[cfg(test)]
mod tests;

//! The rule sets of a network as its accepted changes published them, and which one is in
//! force in any change's causal past.
//!
//! Every accepted change that writes the rule set (kind `ruleSets`, id `network`) makes a
//! *version*: the rule set in force in its causal past with the fields it writes. The rule set
//! in force for a change is, of the versions in its causal past, the one with the highest
//! version number (ties, from two admins publishing concurrently: the greater change hash).
//! That is a function of the causal past alone (a maximum over the dependencies' own), so it
//! is the same on every replica whatever order changes arrived in, and a replica holding a
//! newer version still judges an older change by the version its recorder had.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use automerge::legacy::{Key, OpType};
use automerge::{ActorId, ChangeHash, ExpandedChange, ScalarValue};

use super::{CompiledRules, Finding, Recorder, RuleSet, Which, RULE_SET_ID};
use crate::membership::{Member, Rejection, Role};
use crate::order::OrderKey;
use crate::schema::ObjectKey;
use crate::vf::{EconomicEvent, ObjectKind};

/// One published version.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    /// The change that published it.
    pub change: ChangeHash,
    /// Its compiled rules.
    pub rules: Arc<CompiledRules>,
}

/// What the views need to judge one event by the rules: the rules in force in its causal
/// past, its recorder, and the refuse rules that failed to evaluate for it at admission
/// (flagged with the flag rules' findings). Shared by the events of one change that have no
/// such failures.
#[derive(Debug, Clone)]
pub(crate) struct EventRules {
    pub rules: Arc<CompiledRules>,
    pub recorder: Recorder,
    /// `None`: not known (a stored change read again on open, not judged again): the views
    /// evaluate the refuse rules themselves, for their errors only.
    pub refuse_errors: Option<Vec<Finding>>,
}

/// What [`RuleIndex::judge`] found in a change, for [`RuleIndex::admit`].
#[derive(Debug, Clone)]
struct Staged {
    change: ChangeHash,
    version: Option<Arc<CompiledRules>>,
    /// The refuse rules that failed to evaluate, by the event's op index in the change.
    errors: Vec<(usize, Vec<Finding>)>,
}

/// Judge `events` (as admission read them, by op index in `change`) by the refuse rules of
/// `rules`: the first refusal (a rule that does not hold), or the rules that failed to
/// evaluate, by op index.
fn refuse_events(
    rules: &CompiledRules,
    change: &ExpandedChange,
    events: Vec<(usize, EconomicEvent)>,
    rec: &Recorder,
) -> Result<Vec<(usize, Vec<Finding>)>, Rejection> {
    let mut errors = Vec::new();
    let id_of = |i: usize| format!("{}@{}", change.start_op.get() + i as u64, change.actor_id);
    for (i, event) in events {
        if !rules.applies(Which::Refuse, event.action) {
            continue;
        }
        let found = refuse_findings(rules, event, &id_of(i), rec);
        if let Some(f) = found.iter().find(|f| f.error.is_none()) {
            return Err(Rejection::RuleRefused {
                rule: f.rule.clone(),
                message: f.message.clone(),
                event: id_of(i),
                version: rules.rule_set().version,
            });
        }
        if !found.is_empty() {
            errors.push((i, found));
        }
    }
    Ok(errors)
}

/// What the refuse rules of `rules` find in one event (which they apply to) recorded by
/// `rec` under op id `id`.
fn refuse_findings(
    rules: &CompiledRules,
    mut event: EconomicEvent,
    id: &str,
    rec: &Recorder,
) -> Vec<Finding> {
    if rules.reads_event_id(Which::Refuse) {
        event.id = crate::vf::Id(id.to_string());
    }
    rules.evaluate(&event, rec, None, Which::Refuse)
}

/// The rule-set versions of the accepted changes; see the module documentation.
#[derive(Debug, Default, Clone)]
pub(crate) struct RuleIndex {
    versions: Vec<Version>,
    /// The version in force for each accepted change that has one in its causal past (or
    /// publishes one). Absent: no rule set.
    in_force: HashMap<ChangeHash, u32>,
    /// Events of accepted changes under a rule set, for the views (drained by the replica).
    pending: Vec<(OrderKey, Arc<EventRules>)>,
    staged: Option<Staged>,
    /// The last recorder made, for the next change of the same member (most are).
    last_recorder: Option<(Member, Recorder)>,
    /// The last shared [`EventRules`] made, for the next change with the same rules and
    /// recorder (most are): one allocation per run of changes, not per change.
    last_shared: Option<Arc<EventRules>>,
}

fn refuse_rules(detail: impl Into<String>) -> Rejection {
    Rejection::InvalidRules {
        detail: detail.into(),
    }
}

/// The recorder of a change, as rules see it.
pub(crate) fn recorder(m: &Member) -> Recorder {
    Recorder {
        device: m.device.to_string(),
        agent: m.agent.clone(),
        role: m.role,
    }
}

/// The events a change records: (op index, JSON text). An event is a put in an event bucket
/// under the op's own id (`<counter>@<actor>`); admission has checked that such keys occur
/// only there (object-bucket keys are JSON arrays).
fn events_of(change: &ExpandedChange) -> impl Iterator<Item = (usize, &str)> + '_ {
    change
        .operations
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match (&op.key, &op.action) {
            (Key::Map(k), OpType::Put(ScalarValue::Str(text)))
                if !k.starts_with('[') && k.contains('@') =>
            {
                Some((i, text.as_str()))
            }
            _ => None,
        })
}

impl RuleIndex {
    /// The recorder of a change by `author` (made once per run of changes by one member).
    fn recorder_of(&mut self, author: &Member) -> &Recorder {
        if self.last_recorder.as_ref().is_none_or(|(m, _)| m != author) {
            self.last_recorder = Some((author.clone(), recorder(author)));
        }
        let (_, r) = self.last_recorder.as_ref().expect("just set");
        r
    }

    /// The version in force for a change with these dependencies.
    fn in_force_of(&self, deps: &[ChangeHash]) -> Option<u32> {
        deps.iter()
            .filter_map(|d| self.in_force.get(d).copied())
            .max_by_key(|i| {
                let v = &self.versions[*i as usize];
                (v.rules.rule_set().version, v.change)
            })
    }

    /// The rules in force for a change with these dependencies.
    pub(crate) fn rules_for(&self, deps: &[ChangeHash]) -> Option<&Arc<CompiledRules>> {
        self.in_force_of(deps)
            .map(|i| &self.versions[i as usize].rules)
    }

    /// The rules in force at `heads` (what a new change would be judged by).
    pub(crate) fn in_force_at(&self, heads: &[ChangeHash]) -> Option<&Arc<CompiledRules>> {
        self.rules_for(heads)
    }

    /// Every published version, oldest first (in the order accepted).
    pub(crate) fn versions(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter()
    }

    /// Judge what a change does to the rules and what the rules say of its events: a rule-set
    /// write by an admin, with a version above the one in force in its causal past, that
    /// compiles; every event kept by the refuse rules in force in its causal past. `events`:
    /// the events it records, as admission read them (by op index).
    pub(crate) fn judge(
        &mut self,
        change: &ExpandedChange,
        events: Vec<(usize, EconomicEvent)>,
        hash: ChangeHash,
        deps: &[ChangeHash],
        author: &Member,
    ) -> Result<(), Rejection> {
        let version = self.publication(change, deps, Some(author))?;
        // The events, by the refuse rules in force in the causal past (a rule set this
        // change publishes judges only the changes that come after it).
        let errors = match self.rules_for(deps).filter(|r| r.has_refusals()).cloned() {
            Some(rules) => {
                let rec = self.recorder_of(author);
                refuse_events(&rules, change, events, rec)?
            }
            None => Vec::new(),
        };
        self.staged = Some(Staged {
            change: hash,
            version,
            errors,
        });
        Ok(())
    }

    /// The rule-set version a change publishes, if it writes the rule set. `author`: the
    /// author, whose role is checked (None: a stored change, accepted earlier).
    fn publication(
        &self,
        change: &ExpandedChange,
        deps: &[ChangeHash],
        author: Option<&Member>,
    ) -> Result<Option<Arc<CompiledRules>>, Rejection> {
        let past_rules = self.rules_for(deps);
        // Rule-set writes: collect the fields this change puts.
        let mut fields: BTreeMap<String, &str> = BTreeMap::new();
        // Optional fields a new version leaves out (its writer deletes their keys).
        let mut deleted: Vec<String> = Vec::new();
        let mut writes = false;
        for op in &change.operations {
            let Key::Map(k) = &op.key else { continue };
            if !k.starts_with("[\"ruleSets\"") {
                continue;
            }
            let Some(parsed) = ObjectKey::parse(k) else {
                continue;
            };
            let (kind, id, field) = match &parsed {
                ObjectKey::Marker(kind, id) => (*kind, id, None),
                ObjectKey::Field(kind, id, f) => (*kind, id, Some(f)),
            };
            if kind != ObjectKind::RuleSet {
                continue;
            }
            writes = true;
            if let Some(a) = author.filter(|a| a.role != Role::Admin) {
                return Err(Rejection::RulesNotByAdmin { device: a.device });
            }
            if id != RULE_SET_ID {
                return Err(refuse_rules(format!(
                    "a rule set with id {id:?}: a network has one, {RULE_SET_ID:?}"
                )));
            }
            match (field, &op.action) {
                (Some(f), OpType::Put(ScalarValue::Str(text))) => {
                    fields.insert(f.clone(), text.as_str());
                }
                (Some(f), OpType::Delete) if f == "note" || f == "recordForOthers" => {
                    fields.remove(f.as_str());
                    deleted.push(f.clone());
                }
                (Some(f), OpType::Delete) => {
                    return Err(refuse_rules(format!(
                        "deletes the field {f} of the rule set"
                    )))
                }
                (None, _) => {}
                (Some(f), _) => return Err(refuse_rules(format!("field {f} is not JSON text"))),
            }
        }
        if !writes {
            return Ok(None);
        }
        if !fields.contains_key("version") {
            return Err(refuse_rules(
                "a rule-set write that does not set a new version",
            ));
        }
        let mut json = match past_rules {
            Some(r) => {
                serde_json::to_value(r.rule_set()).map_err(|e| refuse_rules(e.to_string()))?
            }
            None => serde_json::json!({}),
        };
        if let Some(obj) = json.as_object_mut() {
            for f in &deleted {
                obj.remove(f);
            }
            for (f, text) in &fields {
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| refuse_rules(format!("field {f}: {e}")))?;
                obj.insert(f.clone(), value);
            }
        }
        let mut set: RuleSet = serde_json::from_value(json)
            .map_err(|e| refuse_rules(format!("not a rule set: {e}")))?;
        set.id = crate::vf::Id::from(RULE_SET_ID);
        if let Some(p) = past_rules {
            let before = p.rule_set().version;
            if set.version <= before {
                return Err(refuse_rules(format!(
                    "version {} is not above version {before}, in force in its causal past",
                    set.version
                )));
            }
        }
        let compiled = set.compile().map_err(|e| refuse_rules(e.to_string()))?;
        Ok(Some(Arc::new(compiled)))
    }

    /// Index an accepted change (after [`RuleIndex::judge`] accepted it, or when a replica
    /// opens stored changes that were accepted earlier: then `judged` is false and the change
    /// is read without judging).
    pub(crate) fn admit(
        &mut self,
        change: &ExpandedChange,
        hash: ChangeHash,
        deps: &[ChangeHash],
        author: Option<&Member>,
    ) {
        let staged = self.staged.take().filter(|s| s.change == hash);
        let past = self.in_force_of(deps);
        let (version, errors) = match staged {
            Some(s) => (s.version, Some(s.errors)),
            // A stored change, accepted earlier: read what it publishes; which refuse rules
            // failed to evaluate for its events (none refused it) the views work out from
            // the events they hold (no second parse here).
            None => (self.publication(change, deps, None).ok().flatten(), None),
        };
        if let (Some(rules), Some(author)) = (
            past.map(|i| self.versions[i as usize].rules.clone()),
            author,
        ) {
            let judged = errors.is_some();
            self.recorder_of(author);
            let (_, rec) = self.last_recorder.as_ref().expect("just made");
            let reuse = self
                .last_shared
                .as_ref()
                .filter(|last| {
                    Arc::ptr_eq(&last.rules, &rules)
                        && last.recorder == *rec
                        && last.refuse_errors.is_some() == judged
                })
                .cloned();
            let shared = match reuse {
                Some(last) => last,
                None => {
                    let made = Arc::new(EventRules {
                        rules,
                        recorder: rec.clone(),
                        refuse_errors: judged.then(Vec::new),
                    });
                    self.last_shared = Some(made.clone());
                    made
                }
            };
            let actor: &ActorId = &change.actor_id;
            let mut errors = errors.unwrap_or_default().into_iter().peekable();
            // Nothing for the views to judge: no flag rule, and no refuse rule that failed
            // (or might have: a stored change, not judged here).
            let nothing = !shared.rules.has_flags() && (judged || !shared.rules.has_refusals());
            for (i, _) in events_of(change) {
                let own = match errors.peek() {
                    Some((at, _)) if *at == i => errors.next().map(|(_, found)| {
                        Arc::new(EventRules {
                            refuse_errors: Some(found),
                            ..(*shared).clone()
                        })
                    }),
                    _ => None,
                };
                if own.is_none() && nothing {
                    continue;
                }
                self.pending.push((
                    OrderKey {
                        counter: change.start_op.get() + i as u64,
                        actor: actor.clone(),
                    },
                    own.unwrap_or_else(|| shared.clone()),
                ));
            }
        }
        let own = match version {
            Some(rules) => {
                let i = self.versions.len() as u32;
                self.versions.push(Version {
                    change: hash,
                    rules,
                });
                Some(i)
            }
            None => past,
        };
        if let Some(i) = own {
            self.in_force.insert(hash, i);
        }
    }

    /// Take the events waiting to be judged by the views.
    pub(crate) fn take_pending(&mut self) -> Vec<(OrderKey, Arc<EventRules>)> {
        std::mem::take(&mut self.pending)
    }
}

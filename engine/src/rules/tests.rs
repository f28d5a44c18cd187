use super::*;

fn rule(outcome: Outcome, check: &str) -> Rule {
    Rule {
        name: "r".into(),
        outcome,
        actions: vec![],
        check: check.into(),
        message: "m".into(),
    }
}

fn compile(outcome: Outcome, check: &str) -> Result<CompiledRules, RuleError> {
    RuleSet::new("test", 1, vec![rule(outcome, check)]).compile()
}

fn recorder() -> Recorder {
    Recorder {
        device: "d".into(),
        agent: Id::from("ana"),
        role: Role::Member,
    }
}

#[test]
fn templates_compile() {
    for t in TEMPLATES {
        let set = RuleSet::from_json(t.json).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        set.compile().unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
}

#[test]
fn what_a_rule_may_not_use_is_refused_at_compile() {
    for check in [
        "event.quantity.milli > 1.5",                // a double literal
        "double(event.quantity.milli) > 1",          // double conversion
        "[1, 2].all(x, x > 0)",                      // a loop macro
        "[1, 2].map(x, x + 1) == [2, 3]",            // a loop macro
        "now > 1",                                   // an unknown name
        "event.note.matches('x')",                   // regex
        "timestamp('2020-01-01T00:00:00Z') != null", // clock types
        "event.provider ==",                         // does not parse
        "b'x' == b'x'",                              // bytes
    ] {
        assert!(compile(Outcome::Flag, check).is_err(), "{check}");
    }
    let long = vec!["1 == 1"; 200].join(" && ");
    assert!(matches!(
        compile(Outcome::Flag, &long),
        Err(RuleError::NotAllowed { .. })
    ));
    // Refuse rules never read resource state.
    assert!(compile(Outcome::Refuse, "resource == null").is_err());
    assert!(compile(Outcome::Flag, "resource == null").is_ok());
    // Names are unique.
    let twice = RuleSet::new(
        "t",
        1,
        vec![rule(Outcome::Flag, "true"), rule(Outcome::Flag, "true")],
    );
    assert!(matches!(twice.compile(), Err(RuleError::DuplicateName(_))));
}

#[test]
fn evaluation_sees_decimals_as_text_and_thousandths() {
    let c = compile(
        Outcome::Flag,
        "event.quantity.value == '2.5' && event.quantity.milli == 2500 && event.quantity.unit == 'kg' && recorder.agent == 'ana'",
    )
    .expect("compiles");
    let e = EconomicEvent::new(Action::Produce, "ana", "ana")
        .quantity("2.5".parse::<Quantity>().expect("decimal"), "kg");
    assert!(c.evaluate(&e, &recorder(), None, Which::Flag).is_empty());
    let e = EconomicEvent::new(Action::Produce, "ana", "ana").quantity(3, "kg");
    let found = c.evaluate(&e, &recorder(), None, Which::Flag);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].error, None);
}

#[test]
fn failures_are_findings_with_errors() {
    let c = compile(Outcome::Refuse, "event.quantity.milli > 0").expect("compiles");
    let e = EconomicEvent::new(Action::Work, "ana", "ana");
    // A failing refuse rule is a finding with its error (admission refuses only on a
    // finding without one; the views flag this one), named.
    let found = c.evaluate(&e, &recorder(), None, Which::Refuse);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, "r");
    assert!(found[0].error.is_some());
    // Refuse rules do not run as flag rules.
    assert!(c.evaluate(&e, &recorder(), None, Which::Flag).is_empty());
    // A check that is not a boolean is an error too.
    let c = compile(Outcome::Flag, "event.action").expect("compiles");
    let found = c.evaluate(&e, &recorder(), None, Which::Flag);
    assert!(found[0].error.is_some(), "{found:?}");
}

#[test]
fn rules_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CompiledRules>();
}

#[test]
fn what_a_rule_reads_is_worked_out_down_to_nested_fields() {
    let c = compile(
        Outcome::Flag,
        "resource == null || event.quantity == null || event.quantity.milli <= resource.onhand.milli",
    )
    .expect("compiles");
    let fields = |pairs: Vec<(&str, VarUse)>| {
        VarUse::Fields(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    };
    assert_eq!(
        c.uses_flag.resource,
        fields(vec![("onhand", fields(vec![("milli", VarUse::All)]))])
    );
    assert_eq!(
        c.uses_flag.event,
        fields(vec![("quantity", fields(vec![("milli", VarUse::All)]))])
    );
    assert_eq!(c.uses_flag.recorder, VarUse::None);
    // Only whether it is there.
    let c = compile(Outcome::Flag, "null != resource").expect("compiles");
    assert_eq!(c.uses_flag.resource, VarUse::presence());
    // As a whole.
    for check in [
        "size(resource) > 0",
        "'onhand' in resource",
        "resource == {'id': 'x'}",
        "resource['onhand'] != null",
    ] {
        let c = compile(Outcome::Flag, check).expect("compiles");
        assert_eq!(c.uses_flag.resource, VarUse::All, "{check}");
    }
    let c = compile(Outcome::Flag, "size(resource.onhand) == 3").expect("compiles");
    assert_eq!(c.uses_flag.resource, fields(vec![("onhand", VarUse::All)]));
}

/// Building only what the rules read never changes a verdict: every check below gives the
/// same findings with its inputs built as worked out and with every field of every input
/// built, on events and resource states varied by a seeded generator.
#[test]
fn inputs_built_as_worked_out_give_the_verdicts_of_whole_inputs() {
    let checks = [
        "resource == null || event.quantity == null || event.quantity.milli <= resource.onhand.milli",
        "event.provider == recorder.agent || recorder.role == 'admin'",
        "resource != null && resource.onhand != null",
        "has(event.quantity) && event.quantity != null",
        "event.quantity == null || size(event.quantity) == 3",
        "resource == null || resource.onhand == {'value': resource.onhand.value, 'milli': resource.onhand.milli, 'unit': resource.onhand.unit}",
        "null == event.effort || event.effort.milli <= 8000",
        "resource == null || 'milli' in resource.accounting",
        "event == null",
        "event.quantity.value == '2.5'",
        "resource.custodian == event.receiver",
        "event.atLocation != null",
        "{'a': event.provider}.a == event.provider",
    ];
    let seed: u64 = 0x5eed_0015;
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for check in checks {
        let c = compile(Outcome::Flag, check).unwrap_or_else(|e| panic!("{check}: {e}"));
        let mut whole = compile(Outcome::Flag, check).expect("compiles");
        whole.uses_flag = Uses {
            event: VarUse::All,
            recorder: VarUse::All,
            resource: VarUse::All,
        };
        for case in 0..64 {
            let r = next();
            let action = [Action::Transfer, Action::Work, Action::Produce][(r % 3) as usize];
            let mut e = EconomicEvent::new(action, "ana", if r & 8 == 0 { "ana" } else { "bo" });
            if r & 16 != 0 {
                let q: Quantity = format!("{}.{}", (r >> 8) % 5, (r >> 12) % 10)
                    .parse()
                    .expect("decimal");
                e = e.quantity(q, "kg");
            }
            if r & 32 != 0 {
                e.effort_quantity = Some(Measure {
                    has_numerical_value: Quantity::from(((r >> 16) % 12) as i64),
                    has_unit: Id::from("hour"),
                });
            }
            if r & 64 != 0 {
                e.at_location = Some(Id::from("stall"));
            }
            let resource = (r & 128 != 0).then(|| ResourceSeen {
                id: Id::from("lot"),
                unit: (r & 256 != 0).then(|| Id::from("kg")),
                onhand: Quantity::from(((r >> 20) % 5) as i64),
                accounting: Quantity::from(((r >> 24) % 5) as i64),
                custodian: (r & 512 != 0).then(|| Id::from("bo")),
                ..Default::default()
            });
            let mut rec = recorder();
            if r & 1024 != 0 {
                rec.role = Role::Admin;
            }
            let got = c.evaluate(&e, &rec, resource.as_ref(), Which::Flag);
            let want = whole.evaluate(&e, &rec, resource.as_ref(), Which::Flag);
            let verdicts = |f: &[Finding]| f.iter().map(|f| f.error.is_some()).collect::<Vec<_>>();
            assert_eq!(
                verdicts(&got),
                verdicts(&want),
                "check {check:?}, case {case}, seed {seed:#x}: {got:?} against {want:?}"
            );
        }
    }
}

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

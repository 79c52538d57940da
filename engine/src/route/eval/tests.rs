use super::*;

fn item(grading: Grading, gold: &str, aliases: Option<&[&str]>) -> EvalItem {
    EvalItem {
        id: "t".into(),
        source: String::new(),
        prompt: String::new(),
        grading,
        gold: gold.into(),
        aliases: aliases.map(|a| a.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn choice_takes_the_first_standalone_capital_a_to_e() {
    let c = item(Grading::Choice, "C", None);
    assert!(c.grade("C. hot, sunny summer weather"));
    assert!(c.grade("The answer is (C)."));
    assert!(c.grade("Each option... Correct: C"));
    assert!(!c.grade("The answer is B, not C."));
    // "A" as an article is a standalone capital A: the rule's letter, so this is wrong.
    assert!(!c.grade("A hot day means C"));
    // Letters inside words and other capitals do not count.
    assert!(c.grade("CAT? Dogs? FISH? C"));
    assert!(!c.grade("no letter here"));
    assert!(!c.grade("F"));
}

#[test]
fn number_takes_the_last_number_without_commas() {
    let n = item(Grading::Number, "1,200", None);
    assert!(n.grade("First 3 boxes, then 400 each: 1,200"));
    assert!(n.grade("The total is 1200."));
    assert!(n.grade("1200.0"));
    assert!(!n.grade("1,200 at first, then 5"));
    assert!(!n.grade("twelve hundred"));
    let neg = item(Grading::Number, "-7", None);
    assert!(neg.grade("It drops to -7"));
    assert!(!neg.grade("It drops 7"));
    let dec = item(Grading::Number, "2.5", None);
    assert!(dec.grade("so 2.5."));
    assert!(!dec.grade("so 25"));
}

#[test]
fn yes_no_takes_the_first_whole_word() {
    let y = item(Grading::YesNo, "yes", None);
    assert!(y.grade("Yes, it is."));
    assert!(y.grade("I know: YES"));
    assert!(!y.grade("No. Yes."));
    assert!(!y.grade("Nothing to say"));
    let n = item(Grading::YesNo, "no", None);
    assert!(n.grade("Well... no!"));
    assert!(!n.grade("yes no"));
}

#[test]
fn alias_matches_normalized_whole_words() {
    let a = item(Grading::Alias, "17", Some(&["17", "seventeen"]));
    assert!(a.grade("She was 17."));
    assert!(a.grade("Seventeen years old"));
    assert!(!a.grade("About 170 of them"));
    let l = item(
        Grading::Alias,
        "4.37 light-years",
        Some(&["4.37 light-years"]),
    );
    assert!(l.grade("It is 4.37 light years away"));
    let t = item(Grading::Alias, "The Beatles", Some(&["The Beatles"]));
    assert!(t.grade("beatles, of course"));
    assert!(!t.grade("the rolling stones"));
    // Without aliases the gold answer itself is the alias.
    let g = item(Grading::Alias, "Paris", None);
    assert!(g.grade("PARIS!"));
    assert!(!g.grade("Parisian"));
}

#[test]
fn sets_parse_from_jsonl_and_bad_lines_name_their_number() {
    let text = r#"{"id": "a:1", "source": "arc_easy", "prompt": "Q?\n\nA. x\nB. y", "grading": "choice", "gold": "B", "aliases": null}

{"id": "t:2", "source": "triviaqa", "prompt": "Who?", "grading": "alias", "gold": "Canada", "aliases": ["Canada", "CANADA"]}
"#;
    let items = parse_set(text).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].grading, Grading::Choice);
    assert!(items[1].grade("It is canada."));
    let bad = "{\"id\": \"x\"}\n{\"id\": \"y\", \"prompt\": \"p\", \"grading\": \"essay\", \"gold\": \"g\"}";
    let e = parse_set(bad).unwrap_err();
    assert_eq!(e.line, 1);
}

#[test]
fn auroc_ranks_wrong_answers_against_right_ones() {
    let wrong = [true, true, false, false];
    assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &wrong), Some(1.0));
    assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &wrong), Some(0.0));
    assert_eq!(auroc(&[0.5; 4], &wrong), Some(0.5));
    // 3 of the 4 (wrong, right) pairs ordered correctly.
    assert_eq!(auroc(&[0.9, 0.3, 0.5, 0.1], &wrong), Some(0.75));
    // One tie among the pairs counts half: (0.9>0.5, 0.9>0.1, 0.5=0.5, 0.5>0.1).
    assert_eq!(auroc(&[0.9, 0.5, 0.5, 0.1], &wrong), Some(0.875));
    assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
}

#[test]
fn hybrid_accuracy_matches_the_eval_readme_baseline_arithmetic() {
    // 300 questions, 55 right locally: at a 30% cloud share random routing gives 42.8% and a
    // perfect router 48.3% (router-eval/README.md).
    let wrong: Vec<bool> = (0..300).map(|i| i >= 55).collect();
    let useless = vec![0.0; 300];
    let p = at_share(&useless, &wrong, 0.3);
    assert!((p.random - 0.428333).abs() < 1e-5, "{p:?}");
    assert!((p.perfect - 0.483333).abs() < 1e-5, "{p:?}");
    // All tied: the expected accuracy of routing at random.
    assert!((p.accuracy - p.random).abs() < 1e-9, "{p:?}");
    assert!(p.gain_share().unwrap().abs() < 1e-9);
    // A perfect signal sends wrong answers first.
    let oracle: Vec<f64> = wrong.iter().map(|&w| f64::from(u8::from(w))).collect();
    let p = at_share(&oracle, &wrong, 0.3);
    assert!((p.accuracy - p.perfect).abs() < 1e-9, "{p:?}");
    assert!((p.gain_share().unwrap() - 1.0).abs() < 1e-9);
    // The worst signal sends the right answers first.
    let inverse: Vec<f64> = oracle.iter().map(|r| -r).collect();
    let p = at_share(&inverse, &wrong, 0.3);
    assert!((p.accuracy - (0.3 + 0.0 * 0.7)).abs() < 1e-9, "{p:?}");
    assert!(p.gain_share().unwrap() < -1.0);
}

#[test]
fn the_threshold_sends_the_asked_share() {
    let risk: Vec<f64> = (0..10).map(f64::from).collect();
    let t = threshold_for_share(&risk, 0.3);
    assert_eq!(t, 7.0);
    assert_eq!(risk.iter().filter(|&&r| r >= t).count(), 3);
    assert_eq!(threshold_for_share(&risk, 0.0), f64::INFINITY);
    assert_eq!(threshold_for_share(&risk, 1.0), 0.0);
}

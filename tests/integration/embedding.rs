//! `plait::Runtime`: Plait embedded in a Rust program, in this process.

use plait::store::RunStatus;
use plait_test_artifacts::REPO_ROOT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_program_runs_a_workflow_once_per_key_and_keeps_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("device");
    let input: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{REPO_ROOT}/examples/chain/input.json")).unwrap(),
    )
    .unwrap();
    let runtime = plait::Runtime::open(&home).await.unwrap();
    let plan = runtime
        .load(format!("{REPO_ROOT}/examples/chain"))
        .await
        .unwrap();
    let first = runtime
        .run_keyed(&plan, input.clone(), Vec::new(), "reading-1")
        .await
        .unwrap();
    assert_eq!(first.run.status, RunStatus::Succeeded, "{:?}", first.run);
    assert_eq!(first.steps.len(), 3);
    let output = first.run.output.clone().expect("an output");
    assert!(output.to_string().contains("top"), "{output}");
    // The same key and input: the same run, not a second one.
    let again = runtime
        .run_keyed(&plan, input.clone(), Vec::new(), "reading-1")
        .await
        .unwrap();
    assert_eq!(again.run.id, first.run.id);
    assert_eq!(runtime.store().runs().unwrap().len(), 1);
    let missing = runtime.load("no-such-workflow").await.err().unwrap();
    assert!(
        matches!(
            missing,
            plait::RuntimeError::Home(plait::home::HomeError::NoSuchWorkflow(_))
        ),
        "{missing}"
    );
    assert!(runtime.resume_all().await.unwrap().is_empty());
    drop(plan);
    drop(runtime);

    // The journal outlives the program: a new runtime over the folder
    // finds the run (sled lets go of the folder shortly after the last
    // handle is dropped).
    let start = std::time::Instant::now();
    let reopened = loop {
        match plait::Runtime::open(&home).await {
            Ok(runtime) => break runtime,
            Err(error) if start.elapsed() < std::time::Duration::from_secs(10) => {
                let _ = error;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the folder was not released: {error}"),
        }
    };
    let stored = reopened.store().run(&first.run.id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(stored.output, Some(output));
}

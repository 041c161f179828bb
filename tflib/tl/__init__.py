"""tflib.tl -- see CONTRIBUTING.md. Exported names are loaded lazily from their topic module."""
from tflib._lazy import lazy_exports

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "embed": "embedding",  # not embed.py: a submodule named like the function would shadow it
    "gene_embeddings": "embedding",
    "velocity": "rna_velocity",  # not velocity.py: a submodule named like the function would shadow it
    "velocity_qc": "rna_velocity",
    "VelocityInputError": "rna_velocity",
    "VelocityCountsError": "rna_velocity",
    "fates": "fate",
    "fate_probs_frame": "fate",
    "NoTerminalStateError": "fate",
    "DisconnectedGraphError": "fate",
    "FateWarning": "fate",
    "fate_drivers": "drivers",
    "vocab_labels": "trajectory",
    "embedding_velocity": "embedding_flow",
    "embedding_kernel": "embedding_flow",
    "TrajectoryAwareTranscriptformer": "trajectory",
    "row_cosine": "trajectory_metrics",
    "match_terminal_states": "trajectory_metrics",
    "fates_in_truth_space": "trajectory_metrics",
    "fate_accuracy": "trajectory_metrics",
    "fate_accuracy_difference": "trajectory_metrics",
    "cross_boundary_correctness": "trajectory_metrics",
    "scvi_integrate": "integrate",
    "map_query": "integrate",
    "check_counts": "integrate",
    "check_query_genes": "integrate",
    "integration_metrics": "metrics",
    "batch_asw": "metrics",
    "label_asw": "metrics",
    "ilisi": "metrics",
    "kbet_acceptance": "metrics",
    "cluster_agreement": "metrics",
    "Split": "splits",
    "SplitLeakError": "splits",
    "make_split": "splits",
    "check_split": "splits",
    "check_class_sizes": "splits",
    "pca_logreg": "annotate_baselines",
    "project_pca": "annotate_baselines",
    "transfer_labels": "annotate_baselines",
    "evaluate_predictions": "annotate_baselines",
    "per_class_recall": "annotate_baselines",
    "baseline_classifiers": "annotate_baselines",
    "finetune_annotator": "annotation",
    "annotate": "annotation",  # not annotate.py: a submodule named like the function would shadow it
    "confusion_frame": "annotation",
    "bag_of_tokens": "annotation",
    "expected_calibration_error": "annotation",
    "calibration_report": "annotation",
    "downsample_class": "splits",
    "subsample_split": "splits",
    "perturb": "perturbation",  # not perturb.py: a submodule named like the function would shadow it
    "perturb_summary": "perturbation",
    "LinearFateModel": "perturb_baselines",
    "perturb_linear": "perturb_baselines",
    "matched_random_genes": "perturb_baselines",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

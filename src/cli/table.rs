//! Plain-text tables for the terminal.

use bilevel::metrics::Metrics;

/// One line per output (and the averages): log-loss, accuracy, precision, recall, F1, ROC-AUC.
pub fn print_metrics(metrics: &[Metrics]) {
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "output", "log-loss", "accuracy", "precision", "recall", "F1", "ROC-AUC"
    );
    for m in metrics {
        println!(
            "{:<20} {:>9.5} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            m.name, m.log_loss, m.accuracy, m.precision, m.recall, m.f1, m.roc_auc
        );
    }
}

//! Proto ↔ domain conversions. Proto structs are destructured without `..`, so a
//! new field fails to compile until it is handled here.

use emberdb_analysis::drift::{DriftOut, ShiftKind, WindowSpec};
use emberdb_analysis::monitor::{MonitorSpec, MonitorStatus};
use emberdb_proto::v1 as pb;
use emberdb_storage::{
    CollectionInfo, Filter, Hit, IndexStatus, Metric, PointInput, PointOutput, VersionInfo,
    VersionSpec,
};
use tonic::Status;

pub fn metric_from_pb(m: i32) -> Result<Option<Metric>, Status> {
    match pb::Metric::try_from(m) {
        Ok(pb::Metric::Unspecified) => Ok(None),
        Ok(pb::Metric::L2) => Ok(Some(Metric::L2)),
        Ok(pb::Metric::Cosine) => Ok(Some(Metric::Cosine)),
        Ok(pb::Metric::Dot) => Ok(Some(Metric::Dot)),
        Err(_) => Err(Status::invalid_argument(format!(
            "metric: unknown value {m}"
        ))),
    }
}

pub fn metric_to_pb(m: Metric) -> pb::Metric {
    match m {
        Metric::L2 => pb::Metric::L2,
        Metric::Cosine => pb::Metric::Cosine,
        Metric::Dot => pb::Metric::Dot,
    }
}

pub fn version_spec(r: &pb::CreateVersionRequest) -> Result<VersionSpec, Status> {
    let pb::CreateVersionRequest {
        collection: _,
        version: _,
        dimension,
        metric,
        hnsw,
    } = r;
    let (m, ef_construction) = hnsw.as_ref().map_or((0, 0), |h| {
        let pb::HnswParams { m, ef_construction } = h;
        (*m, *ef_construction)
    });
    Ok(VersionSpec {
        dim: *dimension,
        metric: metric_from_pb(*metric)?,
        m,
        ef_construction,
    })
}

pub fn version_info(v: VersionInfo) -> pb::VersionInfo {
    let VersionInfo {
        collection,
        version,
        dim,
        metric,
        point_count,
        indexed_count,
        status,
        m,
        ef_construction,
        created_ms,
    } = v;
    pb::VersionInfo {
        collection,
        version,
        dimension: dim,
        metric: metric_to_pb(metric) as i32,
        point_count,
        indexed_count,
        state: match status {
            IndexStatus::Ready => pb::VersionState::Ready,
            IndexStatus::Indexing => pb::VersionState::Indexing,
        } as i32,
        hnsw: Some(pb::HnswParams { m, ef_construction }),
        created_ms,
    }
}

pub fn collection_info(c: CollectionInfo) -> pb::CollectionInfo {
    let CollectionInfo {
        name,
        versions,
        aliases,
    } = c;
    pb::CollectionInfo {
        name,
        versions: versions.into_iter().map(version_info).collect(),
        aliases: aliases
            .into_iter()
            .map(|(alias, version)| pb::AliasInfo { alias, version })
            .collect(),
    }
}

pub fn point_in(p: pb::Point) -> PointInput {
    let pb::Point {
        id,
        vector,
        label,
        metadata,
        timestamp_ms,
    } = p;
    PointInput {
        id,
        vector,
        label,
        metadata,
        timestamp_ms,
    }
}

pub fn point_out(p: PointOutput) -> pb::Point {
    let PointOutput {
        id,
        vector,
        label,
        metadata,
        timestamp_ms,
    } = p;
    pb::Point {
        id,
        vector: vector.unwrap_or_default(),
        label,
        metadata,
        timestamp_ms,
    }
}

pub fn filter(f: Option<pb::Filter>) -> Option<Filter> {
    f.map(|pb::Filter { labels, metadata }| Filter { labels, metadata })
        .filter(|f| !(f.labels.is_empty() && f.metadata.is_empty()))
}

/// The same hits as parallel arrays (a Search that asked for `columns`).
pub fn neighbor_columns(hits: Vec<Hit>) -> pb::NeighborColumns {
    let mut cols = pb::NeighborColumns {
        ids: Vec::with_capacity(hits.len()),
        distances: Vec::with_capacity(hits.len()),
        labels: Vec::with_capacity(hits.len()),
    };
    for Hit {
        id,
        distance,
        label,
    } in hits
    {
        cols.ids.push(id);
        cols.distances.push(distance);
        cols.labels.push(label);
    }
    cols
}

pub fn neighbors(hits: Vec<Hit>) -> Vec<pb::Neighbor> {
    hits.into_iter()
        .map(
            |Hit {
                 id,
                 distance,
                 label,
             }| pb::Neighbor {
                id,
                distance,
                label,
            },
        )
        .collect()
}

// ---- evaluation ----

use emberdb_analysis::evaluate::{
    ActionItem, ActionsOut, ConfusionOut, MarginOut, ModeRequest, RecallReport, Signal,
};

pub fn eval_mode(m: i32) -> Result<ModeRequest, Status> {
    match pb::EvalMode::try_from(m) {
        Ok(pb::EvalMode::Auto) => Ok(ModeRequest::Auto),
        Ok(pb::EvalMode::Exact) => Ok(ModeRequest::Exact),
        Ok(pb::EvalMode::Approximate) => Ok(ModeRequest::Approximate),
        Err(_) => Err(Status::invalid_argument(format!("mode: unknown value {m}"))),
    }
}

pub fn recall_report(r: RecallReport) -> pb::RecallReport {
    let RecallReport {
        mode,
        recall_at_k,
        precision_at_1,
        hit_at_k,
        mrr,
        map_at_r,
        knn_accuracy,
        query_ids,
        ann_latency_p50_ms,
        exact_latency_p50_ms,
        k,
        ef,
        recall_min,
        recall_p5,
        queries_below_1,
        labelled_queries,
        map_at_r_queries,
    } = r;
    pb::RecallReport {
        mode: mode.name().into(),
        recall_at_k,
        precision_at_1,
        hit_at_k,
        mrr,
        map_at_r,
        knn_accuracy,
        queries: query_ids.len() as u32,
        query_ids,
        ann_latency_p50_ms,
        exact_latency_p50_ms,
        k,
        ef,
        recall_min,
        recall_p5,
        queries_below_1,
        labelled_queries,
        map_at_r_queries,
    }
}

pub fn margin_report(r: MarginOut) -> pb::MarginReport {
    let MarginOut {
        mode,
        mean,
        median,
        p10,
        low_margin_count,
        low_margin_fraction,
        classes,
        lowest,
        threshold,
        points,
        approximate_agreement,
        histogram_edges,
    } = r;
    pb::MarginReport {
        mode: mode.name().into(),
        mean,
        median,
        p10,
        low_margin_count,
        low_margin_fraction,
        classes: classes
            .into_iter()
            .map(|c| pb::ClassMargin {
                label: c.label,
                count: c.count,
                mean_margin: c.mean_margin,
                low_margin_fraction: c.low_margin_fraction,
                histogram: c.histogram,
            })
            .collect(),
        lowest: lowest
            .into_iter()
            .map(|s| pb::LowMarginSample {
                id: s.id,
                label: s.label,
                nearest_id: s.nearest_id,
                nearest_label: s.nearest_label,
                d1: s.d1,
                second_id: s.second_id,
                second_label: s.second_label,
                d2: s.d2,
                margin: s.margin,
            })
            .collect(),
        threshold,
        points,
        approximate_agreement,
        histogram_edges,
    }
}

pub fn confusion_report(r: ConfusionOut) -> pb::ConfusionReport {
    let ConfusionOut {
        mode,
        accuracy,
        errors,
        pairs,
        classes,
        concentration,
        concentrated,
        points,
        approximate_agreement,
    } = r;
    pb::ConfusionReport {
        mode: mode.name().into(),
        accuracy,
        errors,
        pairs: pairs
            .into_iter()
            .map(|p| pb::ConfusionPair {
                true_label: p.true_label,
                predicted_label: p.predicted_label,
                count: p.count,
                rate: p.rate,
                share_of_errors: p.share_of_errors,
                example_ids: p.example_ids,
            })
            .collect(),
        classes: classes
            .into_iter()
            .map(|c| pb::ClassSummary {
                label: c.label,
                count: c.count,
                accuracy: c.accuracy,
                intra_class_distance: c.intra_class_distance,
                nearest_class: c.nearest_class,
                separation: c.separation,
            })
            .collect(),
        concentration,
        concentrated,
        points,
        approximate_agreement,
    }
}

pub fn actions_report(
    r: ActionsOut,
    markdown_for: Option<(&String, &String)>,
) -> pb::ActionsReport {
    let ActionsOut { mode, items } = r;
    pb::ActionsReport {
        mode: mode.name().into(),
        items: items
            .into_iter()
            .map(|i| {
                let markdown = markdown_for
                    .map(|(c, v)| i.markdown(c, v))
                    .unwrap_or_default();
                let ActionItem {
                    signal,
                    subject,
                    value,
                    threshold,
                    meaning,
                    action,
                    owner,
                    evidence_ids,
                    severity,
                } = i;
                pb::ActionItem {
                    signal: match signal {
                        Signal::HighIntraClassDistance => pb::Signal::HighIntraClassDistance,
                        Signal::StrongConfusionPair => pb::Signal::StrongConfusionPair,
                        Signal::LowMarginCluster => pb::Signal::LowMarginCluster,
                    } as i32,
                    subject,
                    value,
                    threshold,
                    meaning,
                    action,
                    owner,
                    evidence_ids,
                    severity,
                    markdown,
                }
            })
            .collect(),
    }
}

pub fn window_pb(w: WindowSpec) -> pb::Window {
    pb::Window {
        version: w.version,
        from_ms: w.from_ms,
        to_ms: w.to_ms,
    }
}

pub fn kind_pb(k: ShiftKind) -> pb::ShiftKind {
    match k {
        ShiftKind::MeanShift => pb::ShiftKind::MeanShift,
        ShiftKind::ScaleChange => pb::ShiftKind::ScaleChange,
        ShiftKind::VarianceCollapse => pb::ShiftKind::VarianceCollapse,
        ShiftKind::NewCluster => pb::ShiftKind::NewCluster,
        ShiftKind::ClassMixChange => pb::ShiftKind::ClassMixChange,
        ShiftKind::Unknown => pb::ShiftKind::Unknown,
    }
}

pub fn drift_report(r: DriftOut) -> pb::DriftReport {
    pb::DriftReport {
        baseline_points: r.baseline_points,
        current_points: r.current_points,
        centroid_euclidean: r.centroid_euclidean,
        centroid_cosine: r.centroid_cosine,
        classes: r
            .classes
            .into_iter()
            .map(|c| pb::ClassDrift {
                label: c.label,
                baseline_count: c.baseline_count,
                current_count: c.current_count,
                euclidean: c.euclidean,
                cosine: c.cosine,
            })
            .collect(),
        ks_max: r.ks_max,
        ks_mean: r.ks_mean,
        ks_drifted_share: r.ks_drifted_share,
        mmd2: r.mmd2,
        mmd_sample: r.mmd_sample,
        norm_shift: r.norm_shift,
        norm_ratio: r.norm_ratio,
        drift_score: r.drift_score,
        threshold: r.threshold,
        threshold_calibrated: r.threshold_calibrated,
        drifted: r.drifted,
        fingerprint: Some(pb::Fingerprint {
            primary: kind_pb(r.primary) as i32,
            scores: r
                .scores
                .into_iter()
                .map(|(kind, z, statistic)| pb::ShiftScore {
                    kind: kind_pb(kind) as i32,
                    z,
                    statistic,
                })
                .collect(),
        }),
        calibration_splits: r.calibration_splits,
    }
}

pub fn spec_pb(s: MonitorSpec) -> pb::MonitorSpec {
    pb::MonitorSpec {
        collection: s.collection,
        version: s.version,
        interval_s: s.interval_s,
        k: s.k,
        sample_size: s.sample_size,
        baseline: s.baseline.map(window_pb),
        record_bundles: s.record_bundles,
    }
}

pub fn status_pb(m: MonitorStatus) -> pb::MonitorStatus {
    let r = m.result.unwrap_or_default();
    pb::MonitorStatus {
        spec: Some(spec_pb(m.spec)),
        last_run_ms: m.last_run_ms,
        recall_at_k: r.recall_at_k,
        precision_at_1: r.precision_at_1,
        low_margin_fraction: r.low_margin_fraction,
        drift_score: r.drift_score,
        consistent: r.consistent,
        points: r.points,
        last_error: m.last_error,
        last_duration_ms: m.last_duration_ms,
    }
}

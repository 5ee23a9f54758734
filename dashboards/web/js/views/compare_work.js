// What a comparison of runs should weigh: a distilled student's total with the teacher's training it needed,
// and energy per unit of work (training sample, 1,000 inferences), as the trainer's terminal table gives them.
//
// The distillation trainer tags each run with role (teacher, baseline, distilled), method (kd, ce) and the
// comparison's id; it sends no teacher run id, so a distilled run's teacher is the run tagged role "teacher"
// in the same comparison. Training is its `epoch` phases; the held-out passes are its `inference` phases.

import { apiGet } from "../api.js";

export function isDistilled(run) {
  const tags = run.tags || {};
  return tags.role === "distilled" || tags.method === "kd";
}

/** The node figure of one phase name, or null where the run has none. */
export function phaseFigure(energy, name) {
  const p = (energy.phases || []).find((x) => x.name === name);
  return p ? { energy_j: p.energy_j, uncertainty_j: p.uncertainty_j } : null;
}

/**
 * For each distilled run among `items` ({id, run, energy}): {teacher: {run, energy}, training} where the
 * teacher is found (training: its epoch phases, null where it was not trained here), or {missing: why}.
 * A teacher outside the selection is looked up by the comparison tag.
 */
export async function findTeachers(items, signal) {
  const out = new Map();
  await Promise.all(items.filter((x) => isDistilled(x.run)).map(async (x) => {
    const cid = (x.run.tags || {}).comparison;
    if (!cid) {
      out.set(x.id, { missing: "it carries no comparison tag naming its teacher's run" });
      return;
    }
    let teacher = items.find((y) => (y.run.tags || {}).comparison === cid && y.run.tags.role === "teacher");
    if (!teacher) {
      const found = (await apiGet("runs", { tag: `comparison:${cid}` }, signal)).find((r) => (r.tags || {}).role === "teacher");
      if (found) teacher = { id: found.id, run: found, energy: await apiGet(`runs/${encodeURIComponent(found.id)}/energy`, null, signal) };
    }
    if (!teacher) out.set(x.id, { missing: `no run tagged role "teacher" in comparison ${cid}` });
    else out.set(x.id, { teacher, training: phaseFigure(teacher.energy, "epoch") });
  }));
  return out;
}

function addPm(a, b) {
  if (!b) return a;
  const u = a.uncertainty_j != null && b.uncertainty_j != null ? Math.hypot(a.uncertainty_j, b.uncertainty_j) : null;
  return { energy_j: a.energy_j + b.energy_j, uncertainty_j: u }; // two runs: independent errors
}

/**
 * The figures compare shows for one run: total (with the teacher's training where `withTeacher`), training
 * J per sample and inference J per 1,000 (null where the metrics do not give the counts).
 */
export function figures(run, energy, teacherInfo, withTeacher) {
  const extra = withTeacher && teacherInfo && teacherInfo.training ? teacherInfo.training : null;
  const own = { energy_j: energy.total.energy_j, uncertainty_j: energy.total.uncertainty_j };
  const m = run.metrics || {};
  const train = phaseFigure(energy, "epoch");
  const samples = m.train_samples;
  const trainAll = train ? addPm(train, extra) : null;
  const perSample = trainAll && samples > 0 ? trainAll.energy_j / samples : null;
  const inf = phaseFigure(energy, "inference");
  const inferences = m.eval_samples > 0 && m.inference_passes > 0 ? m.eval_samples * m.inference_passes : null;
  return {
    total: addPm(own, extra), own, teacherTraining: extra,
    perSample, perSampleU: perSample !== null && trainAll.uncertainty_j != null ? trainAll.uncertainty_j / samples : null,
    per1k: inf && inferences ? (inf.energy_j * 1000) / inferences : null,
    per1kU: inf && inferences && inf.uncertainty_j != null ? (inf.uncertainty_j * 1000) / inferences : null,
  };
}

/** The run the "vs" row is relative to: the one picked, else the run tagged role "baseline", else the first. */
export function referenceOf(runs, picked) {
  return runs.find((r) => r.id === picked) || runs.find((r) => (r.tags || {}).role === "baseline") || runs[0];
}

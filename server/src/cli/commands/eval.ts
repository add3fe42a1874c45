/**
 * `clipserve eval --model <bundle|hf-hub:...> --data <csv>`: zero-shot image–text retrieval on an
 * open_clip-style CSV, printing the model-card table and optionally writing the metrics as JSON.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { PhaseProgress } from '../../checkpoint/progress';
import { readCsvDataset } from '../../dataset/csv';
import { evaluateRetrieval } from '../../eval/evaluate';
import { evalReportJson, formatMetricsTable } from '../../eval/report';
import { resolveModelRef } from '../../hub';
import { loadModel } from '../../runtime/model';
import { csvColumnOptions, csvColumns, type CsvColumnFlags } from '../csv-options';

interface EvalFlags extends CsvColumnFlags {
  model: string;
  data: string;
  batchSize: string;
  out?: string;
}

export function register(program: Command): void {
  csvColumnOptions(program.command('eval'))
    .description(
      'zero-shot image-text retrieval metrics (as open_clip reports them) on a CSV of image paths and captions',
    )
    .requiredOption('-m, --model <ref>', 'bundle directory or hf-hub:<org>/<repo>[@revision]')
    .requiredOption('--data <csv>', 'CSV with an image-path column and a caption column (paths relative to the CSV)')
    .option('--batch-size <n>', 'pairs embedded per batch', '32')
    .option('--out <file>', 'write the metrics as JSON')
    .action(async (flags: EvalFlags) => {
      const batchSize = Number(flags.batchSize);
      if (!Number.isInteger(batchSize) || batchSize < 1)
        throw new Error(`--batch-size must be a positive integer, got "${flags.batchSize}"`);
      const pairs = readCsvDataset(flags.data, csvColumns(flags));
      const progress = new PhaseProgress();
      const bundleDir = await resolveModelRef(flags.model, {
        onDownload: progress.download,
        onConvert: progress.convert,
      });
      progress.stop();
      const model = await loadModel(bundleDir);
      try {
        const bar = new PhaseProgress();
        const result = await evaluateRetrieval(model, pairs, {
          batchSize,
          onProgress: (done, total) => bar.update('embedding pairs', done, total, 'items'),
        }).finally(() => bar.stop());
        process.stdout.write(
          `${model.info.name} ${model.info.version} on ${flags.data} (${result.numSamples} pairs)\n`,
        );
        process.stdout.write(formatMetricsTable(result.metrics));
        if (flags.out) {
          fs.writeFileSync(
            flags.out,
            evalReportJson({
              model: { name: model.info.name, version: model.info.version },
              data: flags.data,
              num_samples: result.numSamples,
              metrics: result.metrics,
            }),
          );
        }
      } finally {
        await model.close();
      }
    });
}

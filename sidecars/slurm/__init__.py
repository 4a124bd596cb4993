"""The Slurm backend: sbatch script rendering, submission, batched status, cancellation."""

"""The shared machinery of the collection's scripts, a module per concern.

The scripts at the top level hold their hyperparameters, models, compile
and fit; this package does the tedious parts behind names they call:

- data: `archives` (where the data is, downloads, safe extraction),
  `datasets` (the built-in readers), `folders` (a folder of images),
  `streaming` (batches read from disk);
- the model's input: `preprocessing` (normalisation from Keras's own
  layers), `augment` (ImageDataGenerator's knobs as one batched layer);
- training: `training` (`prepare_data`, `Run`), `schedules`, `devices`,
  `multiworker`, `history`, `checkpoints`, `backup`;
- the rest: `cli` (flags from a script's hyperparameters), `hardware`,
  `legacy` (old checkpoints), `quiet` (TensorFlow's start-up lines).

Importing the package imports none of them.
"""

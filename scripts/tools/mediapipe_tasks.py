"""MediaPipe Tasks on the exported .tflite files: TF-Lite metadata by MediaPipe's maintained
writer (`describe`, for the export stage) and its ImageClassifier as an app runs it (`classify`,
for parity and the README's snippet; `show` prints a file's metadata and labels).

Usage: .venv-mediapipe/bin/python scripts/tools/mediapipe_tasks.py describe --name fast --version 3f2a... \
           --description "..." --labels models/export/fast/labels.txt FILE.tflite [...]
       .venv-mediapipe/bin/python scripts/tools/mediapipe_tasks.py classify --models FILE.tflite [...] --images IMAGE [...]
       .venv-mediapipe/bin/python scripts/tools/mediapipe_tasks.py show FILE.tflite

Its own environment (`.venv-mediapipe`, requirements-mediapipe.lock): the writer is in
mediapipe-numpy2 0.10.21, which needs protobuf < 5, and TensorFlow.js' converter needs 5.
`describe` adds the input's normalization (mean 0, std 1: the models take raw pixels), RGB, the
labels file on the output, and name, description and version; the graph is untouched."""

import argparse
import json
from pathlib import Path

import mediapipe as mp
from mediapipe.tasks.python.metadata import metadata
from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer


class Writer(metadata_writer.MetadataWriter):
    def add_general_info(self, model_name, model_description=None, version=None):
        # The writer's own add_general_info takes a name and a description, not the schema's
        # version; GeneralMd (public) carries all three, and _general_md is the attribute
        # populate() packs. tests/test_export.py reads the version back from a written file.
        self._general_md = metadata_info.GeneralMd(name=model_name, version=version, description=model_description)
        return self


def describe(payload, name, description, version, classes):
    """`payload` (a .tflite file's bytes) with its metadata and labels file."""
    writer = Writer.create(bytearray(payload)).add_general_info(name, description, version)
    writer.add_image_input(norm_mean=[0.0], norm_std=[1.0])
    writer.add_classification_output(metadata_writer.Labels().add(classes))
    content, _ = writer.populate()
    return bytes(content)


def classify(model_path, image_paths):
    """Each image's top category from MediaPipe's ImageClassifier: (index, name, score)."""
    # README snippet start
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model_path), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        tops = [classifier.classify(mp.Image.create_from_file(path)).classifications[0].categories[0]
                for path in image_paths]
    # README snippet end
    return [(top.index, top.category_name, top.score) for top in tops]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("describe", help="write TF-Lite metadata into .tflite files, in place")
    write.add_argument("--name", required=True)
    write.add_argument("--version", required=True)
    write.add_argument("--description", required=True)
    write.add_argument("--labels", required=True, type=Path, help="one class name per line, in output order")
    write.add_argument("files", nargs="+", type=Path)
    run = commands.add_parser("classify", help="MediaPipe's ImageClassifier on images; JSON out")
    run.add_argument("--models", nargs="+", required=True)
    run.add_argument("--images", nargs="+", required=True)
    show = commands.add_parser("show", help="a .tflite file's metadata and labels, as JSON")
    show.add_argument("file")
    args = parser.parse_args()
    if args.command == "show":
        displayer = metadata.MetadataDisplayer.with_model_file(args.file)
        print(json.dumps({"metadata": json.loads(displayer.get_metadata_json()),
                          "labels": displayer.get_associated_file_buffer("labels.txt").decode().splitlines()}))
    elif args.command == "describe":
        classes = args.labels.read_text().splitlines()
        for path in args.files:
            path.write_bytes(describe(path.read_bytes(), args.name, args.description, args.version, classes))
    else:
        print(json.dumps({"mediapipe": mp.__version__,
                          "results": {m: classify(m, args.images) for m in args.models}}))


if __name__ == "__main__":
    main()

"""Dataset files gn_det writes: Pascal VOC XML converted to COCO JSON (voc) and the toy shapes
dataset (shapes). Light to import (no torch, no detectron2): registering and reading datasets in
detectron2 is gn_det.data's."""

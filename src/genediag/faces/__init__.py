"""The face branch (BioFace): synthetic dysmorphology cohort, MTCNN detection with reviewer overrides, 5-point
alignment, SE-ResNet64 and the DeepGestalt-style CASIA-Net, A-softmax, cross-loss training and evaluation."""

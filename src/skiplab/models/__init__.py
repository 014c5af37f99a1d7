"""Importing this package registers every model (see skiplab.registry)."""
from skiplab.models import (  # noqa: F401
    cifar, convnext, densenet, efficientnet, mlp, mobilenet, mobilenet_v3, preact, resnet, resnet_keras, resnet_v2,
    regnet, rnn, unet, unet_resnet, xception)

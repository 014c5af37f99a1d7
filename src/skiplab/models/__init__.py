"""Importing this package registers every model (see skiplab.registry)."""
from skiplab.models import (  # noqa: F401
    cifar, convnext, densenet, efficientnet, inception_resnet, mlp, mnasnet, mobilenet, mobilenet_v3, preact, regnet,
    resnet, resnet_keras, resnet_v2, rnn, unet, unet_resnet, xception)

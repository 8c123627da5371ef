"""The CNN of Anand et al., Scientific Reports 2025, with size knobs.

Five convolutional blocks holding thirteen 3×3 convolutions (2, 2, 3, 3, 3,
the VGG-16 layout) each block closed by a 2×2 max-pool (five in all), then a
dense classification head. ``width`` scales every block's channel count
(1.0 = 64, 128, 256, 512, 512) and ``input_size`` sets the square input, so
the network can be sized for a Raspberry Pi by measurement. Batch
normalisation after each convolution is an addition for stable training at
small widths; it folds into the convolutions on conversion, so it costs
nothing at inference.
"""

from __future__ import annotations

BLOCK_LAYOUT = (2, 2, 3, 3, 3)
BLOCK_CHANNELS = (64, 128, 256, 512, 512)


def block_channels(width: float) -> list[int]:
    return [max(8, int(round(c * width / 8.0)) * 8) for c in BLOCK_CHANNELS]


def build_model(input_size: int = 96, width: float = 0.25, num_classes: int = 2,
                dropout: float = 0.4, batch_size: int | None = None, bn_momentum: float = 0.9):
    """Keras model taking uint8-range float RGB (0..255), returning softmax.

    Input scaling to [0, 1] is inside the graph, so the converted model takes
    raw 0..255 pixels (metadata normalisation mean 0, std 1).
    A fixed ``batch_size`` of 1 gives a graph XNNPACK takes as one partition.
    ``bn_momentum`` 0.9 (not Keras' 0.99) keeps the inference-time statistics
    close to the weights while they still move fast: with 0.99 a model after
    a few epochs called every cell a blast in inference mode while it was
    right 84 % of the time in training mode.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(input_size, input_size, 3), batch_size=batch_size, name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for block, (convs, channels) in enumerate(zip(BLOCK_LAYOUT, block_channels(width)), start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"block{block}_conv{i}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn{i}")(x)
            x = layers.ReLU(name=f"block{block}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    head = max(32, block_channels(width)[-1])
    x = layers.Dense(head, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout / 2, name="dropout2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"anand2025_w{width:g}_s{input_size}")


def count_conv_and_pool_layers(model) -> tuple[int, int]:
    """(number of Conv2D layers, number of MaxPooling2D layers)."""
    convs = sum(1 for layer in model.layers if layer.__class__.__name__ == "Conv2D")
    pools = sum(1 for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D")
    return convs, pools

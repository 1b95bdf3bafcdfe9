"""The network: Model-Zoo ResNets with the CPU path's convolutions (`resnet`), their stages and
freezing prefixes (`stages`), and classifier heads (`heads`).

May import: `src.native`, `launcher.core`.
"""

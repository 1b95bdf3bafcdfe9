"""`packrun demo`: the tutorial's transfer learning on scikit-learn's digits (`digits_data`), with
the pretrained source model cached (`source_model`), the target runs side by side
(`side_by_side`), run and compared (`main`).

May import: `launcher.sweep` and every layer below.
"""

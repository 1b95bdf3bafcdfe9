"""`packrun demo`: the tutorial's transfer learning on scikit-learn's digits (`digits_data`), with
the pretrained source model cached (`source_model`), the target runs two at a time
(`side_by_side`), run and compared (`main`).

May import: `launcher.sweep` and every layer below.
"""

"""The spine annotation loop's data side: vertebra labels, CT volumes and DICOM SEG from a site.

``labels`` names the vertebrae and the label sets of the models, ``volume`` reads a CT series
from a site (or from files) as a volume in Hounsfield units, ``seg`` turns a SEG into a label
volume and back, and ``totalseg`` imports IDC's TotalSegmentator SEGs as training labels.
"""
